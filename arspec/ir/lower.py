"""Lowering: expanded spec nodes become IR nodes with inferred types. Every shape problem is
reported at the spec location of the node that causes it."""
from __future__ import annotations

from typing import Any

import networkx as nx
import numpy as np

from arspec.distributions import make_distribution
from arspec.errors import Location, Problems
from arspec.ir.graph import IRGraph, IRNode
from arspec.ops.base import OPS, LowerContext, ShapeError, TensorType
from arspec.ordering import OrderingError, compute_order, internal_event
from arspec.spec.expand import Expansion
from arspec.spec.yaml_source import SourceMap, dotted

MAX_PARAMETERS = 2_000_000_000


def build_context(spec, source: SourceMap, problems: Problems) -> LowerContext | None:
    """Event, orderings and output size, as ops see them."""
    event = internal_event(spec.event.shape)
    dist = make_distribution(spec.distribution, event[0])
    if dist.couples_channels and len(spec.event.shape) < 2:
        problems.add(source.locate(("distribution", "coupled")), "distribution.coupled",
                     "coupling channels needs an event with a channel axis, [C, H, W]")
    orders = []
    for i, ordering in enumerate(spec.orderings):
        try:
            orders.append(compute_order(ordering, event))
        except OrderingError as err:
            path = ("ordering", i) if len(spec.orderings) > 1 else ("ordering",)
            problems.add(source.locate(path), dotted(path), str(err))
    if not orders:
        return None
    masks = max(spec.connectivity.masks, len(orders))
    conditioning: dict[str, Any] = dict(spec.conditioning)
    conditioning["__classes__"] = dist.classes if dist.discrete else None
    return LowerContext(event, dist.params_per_element, orders, masks, conditioning, couples_channels=dist.couples_channels)


def lower(spec, expansion: Expansion, source: SourceMap, problems: Problems) -> IRGraph | None:
    """Build the IR; returns None (with problems added) when the spec cannot be lowered."""
    ctx = build_context(spec, source, problems)
    if ctx is None:
        return None
    g = nx.DiGraph()
    root = source.locate(())

    def add(node: IRNode) -> None:
        g.add_node(node.name, node=node)
        for i in node.all_inputs:
            g.add_edge(i, node.name)

    degrees = [ctx.order(m) + 1 for m in range(ctx.masks)]
    add(IRNode("x", "data", TensorType(ctx.event[0], ctx.spatial, degrees), location=source.locate(("event",)), spec_path="event"))
    for name, cond in spec.conditioning.items():
        loc = source.locate(("conditioning", name))
        if cond.type == "global":
            add(IRNode(name, "context", TensorType(cond.classes, ()), location=loc, spec_path=f"conditioning.{name}"))
            continue
        low = tuple(s // cond.upsample for s in ctx.spatial)
        if any(s * cond.upsample != full for s, full in zip(low, ctx.spatial)):
            problems.add(loc, f"conditioning.{name}.upsample", f"event length {list(ctx.spatial)} is not a multiple of upsample {cond.upsample}")
            continue
        add(IRNode(f"{name}@low", "context", TensorType(cond.channels, low), location=loc, spec_path=f"conditioning.{name}"))
        add(IRNode(name, "upsample", TensorType(cond.channels, ctx.spatial), inputs=[f"{name}@low"],
                   attrs={"factor": cond.upsample, "mode": cond.mode, "channels": cond.channels},
                   location=loc, spec_path=f"conditioning.{name}", parameters=cond.channels * cond.channels * cond.upsample if cond.mode == "transposed" else 0))

    for en in expansion.nodes:
        loc = source.locate(en.path)
        op = OPS.get(en.spec.op)
        if op is None or any(i not in g for i in en.inputs + en.condition + ([en.residual] if en.residual else [])):
            continue
        path = dotted(en.path)
        extras = op.extra_inputs(en.spec) if hasattr(op, "extra_inputs") else []
        inputs = en.inputs + extras
        in_types = [g.nodes[i]["node"].type for i in inputs]
        n_main = len(en.inputs)
        if n_main < op.min_inputs or (op.max_inputs is not None and n_main > op.max_inputs):
            want = f"{op.min_inputs}" if op.max_inputs == op.min_inputs else f"at least {op.min_inputs}"
            problems.add(source.locate(en.path + ("inputs",)), f"{path}.inputs", f"{op.name} takes {want} input(s), got {n_main}")
            continue
        try:
            core_type, attrs = op.infer(en.spec, in_types, ctx)
        except ShapeError as err:
            field_path = en.path + ((err.field,) if err.field else ())
            problems.add(source.locate(field_path), dotted(field_path), str(err))
            continue
        except (ValueError, MemoryError, OverflowError) as err:   # never a traceback for a spec
            problems.add(loc, path, f"cannot build this {en.spec.op} node: {err}")
            continue
        out_type = core_type
        attrs["core_type"] = core_type
        if getattr(en.spec, "activation", None) == "gated":
            if core_type.channels % 2:
                problems.add(source.locate(en.path + ("activation",)), f"{path}.activation", f"a gated activation needs an even number of channels, got {core_type.channels}")
                continue
            out_type = TensorType(core_type.channels // 2, core_type.spatial)
        bad = False
        cond_params = 0
        for c in en.condition:
            ct = g.nodes[c]["node"].type
            if ct.spatial and ct.spatial != core_type.spatial:
                problems.add(source.locate(en.path + ("condition",)), f"{path}.condition",
                             f"conditioning {c!r} has spatial shape {list(ct.spatial)}, the op produces {list(core_type.spatial)}")
                bad = True
            cond_params += ct.channels * core_type.channels
        if en.residual is not None:
            rt = g.nodes[en.residual]["node"].type
            if rt.shape != out_type.shape:
                problems.add(source.locate(en.path + ("residual",)), f"{path}.residual",
                             f"residual {en.residual!r} has shape {list(rt.shape)}, the op produces {list(out_type.shape)}")
                bad = True
        if bad:
            continue
        params = op.parameter_count(en.spec, attrs, in_types, core_type) + cond_params
        add(IRNode(en.name, "op", out_type, op, en.spec, attrs, inputs, list(en.condition), en.residual, loc, path, params))

    if problems:
        return None
    out_name = spec.output if spec.output is not None else (expansion.nodes[-1].name if expansion.nodes else "x")
    if spec.output is not None:
        out_name = expansion.scope.get(spec.output)
        if out_name is None:
            problems.add(source.locate(("output",)), "output", f"unknown node {spec.output!r}")
            return None
    out = g.nodes[out_name]["node"]
    dense = not out.type.spatial
    p = ctx.params_per_element
    want = (p * ctx.elements,) if dense else (p * ctx.groups, *ctx.spatial)
    if out.type.shape != want and not (dense and out.type.numel == want[0]):
        loc = out.location or root
        problems.add(loc, out.spec_path or "output",
                     f"the output node {out_name!r} has shape {list(out.type.shape)}, but a {spec.distribution.type} over "
                     f"{list(spec.event.shape)} needs {list(want)} ({p} parameters per element; use channels: output)")
        return None
    if dense and ctx.couples_channels:
        problems.add(source.locate(("distribution", "coupled")), "distribution.coupled",
                     "coupling channels needs a convolutional output (one parameter vector per position), not a dense one")
        return None
    ir = IRGraph(g, out_name, ctx, make_distribution(spec.distribution, ctx.event[0]), dense)
    total = ir.parameters
    if total > MAX_PARAMETERS:
        problems.add(source.locate(("graph",)), "graph", f"the model would have {total:,} parameters, more than the limit of {MAX_PARAMETERS:,}")
        return None
    ir.verify()
    return ir
