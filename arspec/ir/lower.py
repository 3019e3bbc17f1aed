"""Lowering: expanded spec nodes become IR nodes with inferred types and primitive programs. Every
shape problem is reported at the spec location of the node that causes it."""
from __future__ import annotations

import keyword
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx

from arspec.distributions import DistributionInfo, describe_distribution
from arspec.errors import Location, Problems
from arspec.ir.context import ContextUpsampleOp
from arspec.ir.graph import IRGraph, IRNode
from arspec.ops import get_op
from arspec.ops.base import LowerContext, Op, ShapeError
from arspec.ops.registry import op_origin
from arspec.ordering import OBSERVED, OrderingError, compute_order, internal_event
from arspec.primitives import Activation, Add, ContextProjection, Gate
from arspec.primitives.program import Program, ProgramBuilder, ProgramError, Value
from arspec.spec.expand import ExpandedNode, Expansion
from arspec.spec.yaml_source import SourceMap, dotted
from arspec.types import TensorType

MAX_PARAMETERS = 2_000_000_000


def build_context(spec: Any, source: SourceMap, problems: Problems) -> tuple[LowerContext, DistributionInfo] | None:
    """Event, orderings and output size, as ops see them."""
    event = internal_event(spec.event.shape)
    dist = describe_distribution(spec.distribution, event[0])
    if dist.couples_channels and len(spec.event.shape) < 2:
        problems.add(source.locate(("distribution", "coupled")), "distribution.coupled",
                     "coupling channels needs an event with a channel axis, [C, H, W]")
    if dist.couples_channels and len(spec.event.shape) == 4:
        problems.add(source.locate(("distribution", "coupled")), "distribution.coupled",
                     "a coupled likelihood is not available for videos [T, C, H, W] yet: use coupled: false (channels R -> G -> B)")
    orders = []
    for i, ordering in enumerate(spec.orderings):
        try:
            orders.append(compute_order(ordering, event))
        except OrderingError as err:
            path = ("ordering", i) if len(spec.orderings) > 1 else ("ordering",)
            problems.add(source.locate(path), dotted(path), str(err))
    if not orders:
        return None
    agnostic = any(o.type == "agnostic" for o in spec.orderings)
    if agnostic and (len(spec.orderings) > 1 or spec.connectivity.masks > 1):
        problems.add(source.locate(("ordering",)), "ordering",
                     "an agnostic ordering stands alone: it already trains every ordering (no list of orderings, no connectivity masks)")
        return None
    masks = max(spec.connectivity.masks, len(orders))
    ctx = LowerContext(event, dist.params_per_element, orders, masks, dist.classes if dist.discrete else None,
                       couples_channels=dist.couples_channels, conditioning=dict(spec.conditioning), agnostic=agnostic,
                       ordering_seed=int(getattr(spec.orderings[0], "seed", 0)))
    return ctx, dist


def op_failure(op: str, stage: str, node: str, err: Exception) -> str:
    """The message for an op whose code raised (a plugin's bug, or ours): the op, its package, the
    node, and the error in one line."""
    origin = op_origin(op)
    whose = f"the {origin} package's" if origin and origin != "arspec" else "arspec's"
    detail = " ".join(str(err).split())[:300]
    return (f"op {op!r} ({whose} code) failed in its {stage} on node {node!r}: {type(err).__name__}"
            + (f": {detail}" if detail else "") + " (a bug in the op, not in this spec: report it to its authors)")


def identifier(name: str, taken: set[str]) -> str:
    """A unique Python identifier for a node name (`stack[3].filt` -> `stack_3_filt`)."""
    base = re.sub(r"_+", "_", re.sub(r"\W", "_", name, flags=re.ASCII)).strip("_") or "node"
    if base[0].isdigit() or keyword.iskeyword(base):
        base = f"n_{base}"
    ident, k = base, 1
    while ident in taken:
        k += 1
        ident = f"{base}_{k}"
    taken.add(ident)
    return ident


class _Lowering:
    """Builds the graph node by node, collecting problems."""

    def __init__(self, spec: Any, source: SourceMap, problems: Problems, ctx: LowerContext) -> None:
        self.spec, self.source, self.problems, self.ctx = spec, source, problems, ctx
        self.g = nx.DiGraph()
        self.idents: set[str] = set()

    def add(self, node: IRNode) -> None:
        node.ident = identifier(node.name, self.idents)
        self.g.add_node(node.name, node=node)
        for i in node.all_inputs:
            self.g.add_edge(i, node.name)

    def type_of(self, name: str) -> TensorType:
        return self.g.nodes[name]["node"].type

    def sources(self) -> None:
        """The data x and the context inputs (local ones upsampled to the event's resolution)."""
        ctx = self.ctx
        degrees = [ctx.order(m) + 1 for m in range(ctx.masks)]
        self.add(IRNode("x", "data", TensorType(ctx.event[0], ctx.spatial, degrees), location=self.source.locate(("event",)), spec_path="event"))
        if ctx.agnostic:
            self.add(IRNode(OBSERVED, "context", TensorType(ctx.event[0], ctx.spatial), location=self.source.locate(("ordering",)),
                            spec_path="ordering"))
        for name, cond in self.spec.conditioning.items():
            loc = self.source.locate(("conditioning", name))
            path = f"conditioning.{name}"
            if cond.type == "global":
                self.add(IRNode(name, "context", TensorType(cond.classes, ()), location=loc, spec_path=path))
                continue
            low = tuple(s // cond.upsample for s in ctx.spatial)
            if any(s * cond.upsample != full for s, full in zip(low, ctx.spatial)):
                self.problems.add(loc, f"{path}.upsample", f"event length {list(ctx.spatial)} is not a multiple of upsample {cond.upsample}")
                continue
            self.add(IRNode(f"{name}@low", "context", TensorType(cond.channels, low), location=loc, spec_path=path))
            op = ContextUpsampleOp(cond.channels, cond.upsample, cond.mode)
            out, attrs = op.infer(None, [self.type_of(f"{name}@low")], ctx)
            node = IRNode(name, "op", out, op=op, attrs=attrs, inputs=[f"{name}@low"], location=loc, spec_path=path)
            node.program = self.program(node, [self.type_of(f"{name}@low")], out, Location(loc.file, loc.line, loc.column))
            if node.program is not None:
                self.add(node)

    def node(self, en: ExpandedNode) -> None:
        """Lower one expanded node (or report why it cannot be)."""
        op = get_op(en.spec.op)
        if op is None or any(i not in self.g for i in en.inputs + en.condition + ([en.residual] if en.residual else [])):
            return
        path = dotted(en.path)
        if op.reads_data_only and en.inputs != ["x"]:
            self.problems.add(self.source.locate(en.path + ("inputs",)), f"{path}.inputs",
                              f"{op.name} gates the data itself: its inputs must be [x], got {en.inputs}")
            return
        absent = [i for i in op.extra_inputs(en.spec) if i not in self.g]
        if absent:
            what = ("the mask of observed elements, which exists only under `ordering: {type: agnostic}`" if absent[0] == OBSERVED
                    else "which this model does not have")
            self.problems.add(self.source.locate(en.path + ("op",)), f"{path}.op", f"{op.name} reads {absent[0]!r}, {what}")
            return
        inputs = en.inputs + op.extra_inputs(en.spec)
        in_types = [self.type_of(i) for i in inputs]
        n_main = len(en.inputs)
        if n_main < op.min_inputs or (op.max_inputs is not None and n_main > op.max_inputs):
            want = f"{op.min_inputs}" if op.max_inputs == op.min_inputs else f"at least {op.min_inputs}"
            self.problems.add(self.source.locate(en.path + ("inputs",)), f"{path}.inputs", f"{op.name} takes {want} input(s), got {n_main}")
            return
        try:
            core, attrs = op.infer(en.spec, in_types, self.ctx)
        except ShapeError as err:
            field_path = en.path + ((err.field,) if err.field else ())
            self.problems.add(self.source.locate(field_path), dotted(field_path), str(err))
            return
        except (ValueError, MemoryError, OverflowError) as err:   # never a traceback for a spec
            self.problems.add(self.source.locate(en.path), path, f"cannot build this {en.spec.op} node: {err}")
            return
        except Exception as err:                                  # the op's own code failed: name it, and the node
            self.problems.add(self.source.locate(en.path), path, op_failure(op.name, "shape rule", en.name, err))
            return
        node = IRNode(en.name, "op", core, op=op, spec=en.spec, attrs=attrs, inputs=inputs, conditions=list(en.condition),
                      residual=en.residual, location=self.source.locate(en.path), spec_path=path,
                      field_locations={key: self.source.locate(en.path + (key,)) for key in ("inputs", "residual", "condition")})
        if not self.wrappers_fit(node, en):
            return
        program = self.program(node, in_types, core, node.location)
        if program is None:
            return
        node.program = program
        out = program.output_type or core
        node.type = core if out.shape == core.shape else TensorType(out.channels, out.spatial)
        self.add(node)

    def wrappers_fit(self, node: IRNode, en: ExpandedNode) -> bool:
        """Conditioning, a gated activation and a residual must fit the op's output."""
        core, path, ok = node.type, node.spec_path, True
        out_channels = core.channels
        if getattr(node.spec, "activation", None) == "gated":
            if core.channels % 2:
                self.problems.add(self.source.locate(en.path + ("activation",)), f"{path}.activation",
                                  f"a gated activation needs an even number of channels, got {core.channels}")
                return False
            out_channels //= 2
        for c in node.conditions:
            ct = self.type_of(c)
            if ct.spatial and ct.spatial != core.spatial:
                self.problems.add(self.source.locate(en.path + ("condition",)), f"{path}.condition",
                                  f"conditioning {c!r} has spatial shape {list(ct.spatial)}, the op produces {list(core.spatial)}")
                ok = False
        if node.residual is not None:
            rt = self.type_of(node.residual)
            if rt.shape != (out_channels, *core.spatial):
                self.problems.add(self.source.locate(en.path + ("residual",)), f"{path}.residual",
                                  f"residual {node.residual!r} has shape {list(rt.shape)}, the op produces {list((out_channels, *core.spatial))}")
                ok = False
        return ok

    def program(self, node: IRNode, in_types: Sequence[TensorType], core: TensorType, where: Location | None) -> Program | None:
        """The op's semantics, then activation(· + conditioning) + residual."""
        assert node.op is not None
        main = [Value(f"in{i}", t) for i, t in enumerate(in_types)]
        conds = [Value(f"cond{i}", self.type_of(c)) for i, c in enumerate(node.conditions)]
        res = [Value("res", self.type_of(node.residual))] if node.residual else []
        b = ProgramBuilder(main + conds + res)
        try:
            out = node.op.semantics(node.spec, node.attrs, b, main, self.ctx)
        except ProgramError as err:
            self.problems.add(where or Location("<spec>", 1, 1), node.spec_path, f"op {node.op.name!r}: {err}")
            return None
        except Exception as err:                                  # the op's own code failed: name it, and the node
            self.problems.add(where or Location("<spec>", 1, 1), node.spec_path, op_failure(node.op.name, "semantics", node.name, err))
            return None
        if out.type.shape != core.shape:
            self.problems.add(where or Location("<spec>", 1, 1), node.spec_path,
                              f"op {node.op.name!r}: its semantics give shape {list(out.type.shape)}, its shape rule {list(core.shape)}")
            return None
        projections = [b.call("condition", ContextProjection(c.type.channels, core.channels, core.spatial, bool(c.type.spatial)), c)
                       for c in conds]
        if projections:
            out = b.call("conditioned", Add(), out, *projections)
        activation = getattr(node.spec, "activation", "none")
        if activation == "gated":
            out = b.call("gate", Gate(), out)
        elif activation not in (None, "none"):
            out = b.call("activation", Activation(activation), out)  # type: ignore[arg-type]
        if res:
            out = b.call("residual", Add(), out, res[0])
        return b.finish(out)

    def output(self, expansion: Expansion, network_output: NetworkOutput | None = None) -> str | None:
        """The node producing the distribution parameters, checked against the distribution (or, for
        a network that is not a model, such as an encoder, against the shape it must produce)."""
        spec, ctx = self.spec, self.ctx
        out_name = spec.output if spec.output is not None else (expansion.nodes[-1].name if expansion.nodes else "x")
        if spec.output is not None:
            out_name = expansion.scope.get(spec.output)
            if out_name is None:
                self.problems.add(self.source.locate(("output",)), "output", f"unknown node {spec.output!r}")
                return None
        out = self.g.nodes[out_name]["node"]
        if network_output is not None:
            if out.type.shape != network_output.shape:
                self.problems.add(out.location or self.source.locate(()), out.spec_path or "output",
                                  f"the output node {out_name!r} has shape {list(out.type.shape)}, but {network_output.why} "
                                  f"needs {list(network_output.shape)}")
                return None
            return out_name
        dense = not out.type.spatial
        p = ctx.params_per_element
        want = (p * ctx.elements,) if dense else (p * ctx.groups, *ctx.spatial)
        if out.type.shape != want and not (dense and out.type.numel == want[0]):
            self.problems.add(out.location or self.source.locate(()), out.spec_path or "output",
                              f"the output node {out_name!r} has shape {list(out.type.shape)}, but a {spec.distribution.type} over "
                              f"{list(spec.event.shape)} needs {list(want)} ({p} parameter{'s' if p != 1 else ''} per element; use channels: output)")
            return None
        if dense and ctx.couples_channels:
            self.problems.add(self.source.locate(("distribution", "coupled")), "distribution.coupled",
                              "coupling channels needs a convolutional output (one parameter vector per position), not a dense one")
            return None
        return out_name


@dataclass(frozen=True)
class NetworkOutput:
    """What the output of a network that is not itself a model must be: a shape, and why."""

    shape: tuple[int, ...]
    why: str


def lower(spec: Any, expansion: Expansion, source: SourceMap, problems: Problems,
          network_output: NetworkOutput | None = None) -> IRGraph | None:
    """Build the IR; returns None (with problems added) when the spec cannot be lowered."""
    built = build_context(spec, source, problems)
    if built is None:
        return None
    ctx, dist = built
    lowering = _Lowering(spec, source, problems, ctx)
    lowering.sources()
    for en in expansion.nodes:
        lowering.node(en)
    if problems:
        return None
    out_name = lowering.output(expansion, network_output)
    if out_name is None:
        return None
    ir = IRGraph(lowering.g, out_name, ctx, dist, not lowering.type_of(out_name).spatial, spec.name,
                 tuple(spec.event.shape), dict(spec.conditioning), description=spec.description)
    if ir.parameters > MAX_PARAMETERS:
        problems.add(source.locate(("graph",)), "graph", f"the model would have {ir.parameters:,} parameters, more than the limit of {MAX_PARAMETERS:,}")
        return None
    ir.verify()
    return ir


__all__ = ["MAX_PARAMETERS", "OBSERVED", "NetworkOutput", "Op", "build_context", "identifier", "lower"]
