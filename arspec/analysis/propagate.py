"""Dependency propagation through the IR, in either domain: node by node in topological order,
and inside a node call by call through its program (each primitive's own footprint rule)."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from arspec.domains import ConcreteDeps, Deps, OffsetDeps
from arspec.ir.graph import IRGraph, IRNode


def node_footprint(node: IRNode, inputs: list[Deps], mask: int) -> Deps:
    """The dependency sets of a node's output from its inputs' (in `all_inputs` order)."""
    program = node.program
    assert program is not None
    env: dict[str, Deps] = dict(zip(program.inputs, inputs))
    for call in program.calls:
        if not call.args:        # a constant (a table of positions) reads no data
            env[call.name] = inputs[0].empty(call.type.channels, call.type.spatial)
        else:
            env[call.name] = call.primitive.footprint([env[a] for a in call.args], call.type, mask)
    return env[program.output]


def propagate(ir: IRGraph, make_data: Callable[[], Deps], mask: int = 0,
              fixed: dict[str, Deps] | None = None) -> dict[str, Deps]:
    """Dependency sets of every node. `fixed` pins some nodes (used to trace a single path)."""
    fixed = fixed or {}
    out: dict[str, Deps] = {}
    data = make_data()
    for node in ir:
        if node.name in fixed:
            out[node.name] = fixed[node.name]
        elif node.kind == "data":
            out[node.name] = data if not fixed else data.empty(node.type.channels, node.type.spatial)
        elif node.kind == "context":
            out[node.name] = data.empty(node.type.channels, node.type.spatial)
        else:
            out[node.name] = node_footprint(node, [out[i] for i in node.all_inputs], mask)
    return out


def term_deps(ir: IRGraph, deps: dict[str, Deps]) -> Deps:
    """What each element's likelihood term reads: its parameters' dependencies, plus, for a
    distribution coupling a pixel's channels (PixelCNN++), the parameters of every channel at its
    position and the values of the earlier channels there. Both are 1x1 convolutions, so this is
    exact in either domain."""
    out = deps[ir.output]
    if not ir.ctx.couples_channels:
        return out
    groups = ir.ctx.groups
    nd = len(ir.ctx.spatial)
    taps, zero = (1,) * nd, (0,) * nd
    whole = np.ones((out.channels, out.channels) + taps, dtype=bool)
    channel = np.arange(out.channels) % groups
    earlier = (np.arange(groups)[None, :] < channel[:, None]).reshape((out.channels, groups) + taps)
    spatial = ir.ctx.spatial
    return out.conv(whole, taps, zero, spatial).union(deps["x"].conv(earlier, taps, zero, spatial))


def concrete_data(ir: IRGraph, columns: np.ndarray | None = None) -> Callable[[], ConcreteDeps]:
    return lambda: ConcreteDeps.data(ir.ctx.event, columns)


def offset_data(ir: IRGraph) -> Callable[[], OffsetDeps]:
    return lambda: OffsetDeps.data(ir.ctx.event)
