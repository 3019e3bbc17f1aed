"""Dependency propagation through the IR, in either domain, node by node in topological order."""
from __future__ import annotations

from typing import Callable

import numpy as np

from arspec.analysis.deps import ConcreteDeps, Deps, OffsetDeps
from arspec.ir.graph import IRGraph, IRNode


def node_footprint(node: IRNode, inputs: list[Deps], conditions: list[Deps], residual: Deps | None, mask: int) -> Deps:
    """An op's footprint plus what every node may add: conditioning, a gated activation, a residual."""
    deps = node.op.footprint(node.spec, node.attrs, inputs, node.core_type, mask)
    for c in conditions:
        if c.rows.any():
            deps = deps.union(c.broadcast_all(deps.channels, node.core_type.spatial) if not _aligned(c, deps) else c)
    if getattr(node.spec, "activation", None) == "gated":
        half = node.type.channels
        deps = deps.select(np.arange(half)).union(deps.select(np.arange(half, 2 * half)))
    if residual is not None:
        deps = deps.union(residual)
    return deps


def _aligned(cond: Deps, deps: Deps) -> bool:
    """A local conditioning tensor already has one entry per position of the op's output."""
    return cond.rows.shape[1:] == deps.rows.shape[1:] and cond.channels == deps.channels


def propagate(ir: IRGraph, make_data: Callable[[], Deps], mask: int = 0,
              fixed: dict[str, Deps] | None = None) -> dict[str, Deps]:
    """Dependency sets of every node. `fixed` pins some nodes (used to trace a single path)."""
    fixed = fixed or {}
    out: dict[str, Deps] = {}
    data = make_data()
    for node in ir:
        if node.name in fixed:
            out[node.name] = fixed[node.name]
            continue
        if node.kind == "data":
            out[node.name] = data if not fixed else data.empty(node.type.channels, node.type.spatial)
            continue
        if node.kind in ("context", "upsample"):
            if node.kind == "upsample" and out[node.inputs[0]].rows.any():
                out[node.name] = out[node.inputs[0]]
            else:
                out[node.name] = data.empty(node.type.channels, node.type.spatial)
            continue
        inputs = [out[i] for i in node.inputs]
        conds = [out[c] for c in node.conditions]
        res = out[node.residual] if node.residual else None
        out[node.name] = node_footprint(node, inputs, conds, res, mask)
    return out


def term_deps(ir: IRGraph, deps: dict[str, Deps]) -> Deps:
    """What each element's likelihood term reads: its parameters' dependencies, plus, for a
    distribution coupling a pixel's channels (PixelCNN++), the parameters of every channel at its
    position and the values of the earlier channels there. Both are 1x1 convolutions, so this is
    exact in either domain."""
    out = deps[ir.output]
    if not ir.ctx.couples_channels:
        return out
    from arspec.ops.masks import group_connectivity
    nd = len(ir.ctx.spatial)
    taps, zero = (1,) * nd, (0,) * nd
    whole = np.ones((out.channels, out.channels) + taps, dtype=bool)
    earlier = group_connectivity(out.channels, ir.ctx.groups, ir.ctx.groups, "A").reshape((out.channels, ir.ctx.groups) + taps)
    spatial = ir.ctx.spatial
    return out.conv(whole, taps, zero, spatial).union(deps["x"].conv(earlier, taps, zero, spatial))


def concrete_data(ir: IRGraph, columns: np.ndarray | None = None) -> Callable[[], ConcreteDeps]:
    return lambda: ConcreteDeps.data(ir.ctx.event, columns)


def offset_data(ir: IRGraph) -> Callable[[], OffsetDeps]:
    return lambda: OffsetDeps.data(ir.ctx.event)
