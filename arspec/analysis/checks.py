"""The checks run on propagated dependency sets: leak, conditioning leak, blind spot, dead
context, receptive field. Each adds located problems to the report."""
from __future__ import annotations

import math

import numpy as np

from arspec.analysis import periodic
from arspec.analysis.propagate import concrete_data, propagate, term_deps
from arspec.domains import ConcreteDeps, Deps, OffsetDeps
from arspec.errors import Problem
from arspec.ir.graph import IRGraph
from arspec.primitives import SpaceToDepth

MAX_REPORTED = 5
MAX_TRACE_NODES = 400


def _loc(ir: IRGraph, name: str):
    node = ir.node(name)
    return node.location, node.spec_path


def conditioning_leaks(spec, ir: IRGraph, deps: dict[str, Deps], report) -> None:
    """A conditioning path must never read the data x."""
    for node in ir.op_nodes():
        for c in node.conditions:
            if deps[c].rows.any():
                loc, path = _loc(ir, node.name)
                src = ir.node(c)
                report.errors.append(Problem(loc, f"{path}.condition", f"conditioning leak: {c!r} (at {src.location}) reads the data x, "
                                                                        f"so node {node.name!r} sees every element through its conditioning path"))


def trace_path(ir: IRGraph, source: int, target: int, mask: int = 0) -> list[str]:
    """The IR nodes through which data element `source` reaches the parameters of `target`,
    in topological order (exact: a node is listed iff some path through it carries the dependency)."""
    cols = np.array([source])
    forward = propagate(ir, concrete_data(ir, cols), mask)
    g = ir.ctx.groups
    p = ir.ctx.params_per_element
    on_path = []
    nodes = [n for n in ir if n.kind == "op"]
    if len(nodes) > MAX_TRACE_NODES:
        return [n.name for n in nodes if forward[n.name].rows.any()]
    for n in nodes:
        taint = forward[n.name]
        if not taint.rows.any():
            continue
        through = propagate(ir, concrete_data(ir, cols), mask, fixed={n.name: taint})
        terms = term_deps(ir, through)
        assert isinstance(terms, ConcreteDeps)
        if terms.element_table(g, p, ir.dense_output)[target, 0]:
            on_path.append(n.name)
    return on_path


def _culprit(ir: IRGraph, path: list[str], source: int, target: int, mask: int) -> str:
    """The first node on the path whose channels serving the target's channel group already read
    the source at the target's own position (for dense layers: the first node on the path)."""
    if not path:
        return ir.output
    event = ir.ctx.event
    forward = propagate(ir, concrete_data(ir, np.array([source])), mask)
    group, *pos = np.unravel_index(target, event)
    folds = {c.primitive.factor for n in ir.op_nodes() if n.program for c in n.program.calls if isinstance(c.primitive, SpaceToDepth)}
    merges: list[str] = []
    for name in path:
        node = ir.node(name)
        if node.op is not None and node.op.moves_only:
            # a rearrangement computes nothing; a merge of several inputs that puts a prediction
            # in the wrong place is the cause when no computing node is
            merges.extend([name] if len(node.inputs) > 1 else [])
            continue
        place = _target_place(node.type, event, int(group), [int(p) for p in pos], ir.ctx.groups, folds, ir.ctx.couples_channels)
        if place is None:
            continue
        deps = forward[name]
        channels, at = place
        if deps.rows[(_rows_of(deps, channels),) + at].any():
            return name
    return merges[0] if merges else path[0]


def _target_place(t, event: tuple[int, ...], group: int, pos: list[int], groups: int, folds: set[int], whole_pixel: bool = False):
    """Where a node's tensor holds the target element: (channels serving it, position). At the
    event's resolution, the channels of its channel group; at a resolution f times coarser, reached
    by one space_to_depth of factor f (`folds`), the channels of its f×f sub-position group. None
    elsewhere (nested folds have no single place). With `whole_pixel` (a coupled likelihood) every
    channel at the position serves every element there."""
    spatial = tuple(event[1:])
    if not t.spatial or len(t.spatial) != len(spatial) or any(s % n for s, n in zip(spatial, t.spatial)):
        return None
    factors = {s // n for s, n in zip(spatial, t.spatial)}
    if len(factors) != 1:
        return None
    f = factors.pop()
    channel = np.arange(t.channels)
    if f != 1 and f not in folds:
        return None
    if f == 1:
        return (channel if whole_pixel else channel[channel % groups == group]), tuple(pos)
    subs = f ** len(pos)
    sub = int(np.ravel_multi_index(tuple(p % f for p in pos), (f,) * len(pos)))
    serving = channel[channel % subs == sub] if t.channels % subs == 0 else channel
    return serving, tuple(p // f for p in pos)


def _line(ir: IRGraph, name: str) -> int:
    location = ir.node(name).location
    return location.line if location else 0


def _short_chain(ir: IRGraph, path: list[str]) -> str:
    names = [f"{n} (line {_line(ir, n)})" for n in path]
    if len(names) > 8:
        names = names[:4] + [f"... {len(names) - 7} more"] + names[-3:]
    return " -> ".join(["x"] + names)


def _report_leaks(spec, ir: IRGraph, report, pairs: list[tuple[int, int]], affected: int, mask: int) -> None:
    """One error per culprit node: its first example, the path, and how many elements leak."""
    from arspec.analysis.report import element_name
    event, user = ir.ctx.event, tuple(spec.event.shape)
    order = ir.ctx.order(mask)
    by_place: dict[str, tuple[str, int, int, list[str]]] = {}
    for target, source in pairs:
        path = trace_path(ir, source, target, mask)
        culprit = _culprit(ir, path, source, target, mask)
        by_place.setdefault(ir.node(culprit).spec_path, (culprit, target, source, path))
    masks = f" [mask {mask}]" if ir.ctx.masks > 1 else ""
    for culprit, target, source, path in by_place.values():
        loc, spec_path = _loc(ir, culprit)
        relation = "itself" if source == target else f"element {element_name(source, event, user)} (step {order[source]})"
        report.errors.append(Problem(loc, spec_path,
                                     f"leak{masks}: element {element_name(target, event, user)} (step {order[target]}) reads {relation}, "
                                     f"which is not generated before it ({affected} element(s) affected); first seen at node {culprit!r}; "
                                     f"path: {_short_chain(ir, path)}"))


def _pick_pairs(leaks: np.ndarray, limit: int = 8) -> list[tuple[int, int]]:
    """A few leaking (target, source) pairs spread over the targets, future elements first."""
    leaks = leaks[np.argsort(leaks[:, 0] == leaks[:, 1], kind="stable")]
    if len(leaks) <= limit:
        return [(int(t), int(s)) for t, s in leaks]
    idx = np.linspace(0, len(leaks) - 1, limit).astype(int)
    return [(int(leaks[i][0]), int(leaks[i][1])) for i in idx]


def concrete_checks(spec, ir: IRGraph, out: ConcreteDeps, report, mask: int, deps: dict[str, Deps] | None = None) -> None:
    """Leak, dead context, blind spot and receptive field on exact per-element dependency sets."""
    ctx = ir.ctx
    table = out.element_table(ctx.groups, ctx.params_per_element, ir.dense_output)   # (E, N)
    order = ctx.order(mask)
    future = order[None, :] >= order[:, None]
    leaks = np.argwhere(table & future)
    if len(leaks):
        _report_leaks(spec, ir, report, _pick_pairs(leaks), len(np.unique(leaks[:, 0])), mask)
        return
    if mask == 0:
        report.dependencies = table
    past = order[None, :] < order[:, None]
    seen_count = table.sum(axis=1)
    past_count = past.sum(axis=1)
    dead = np.nonzero((seen_count == 0) & (past_count > 0))[0]
    from arspec.analysis.report import element_name
    event, user = ctx.event, tuple(spec.event.shape)
    if len(dead):
        loc, path = _loc(ir, ir.output)
        names = ", ".join(element_name(int(e), event, user) for e in dead[:MAX_REPORTED])
        report.warnings.append(Problem(loc, path, f"dead context: {len(dead)} element(s) see nothing although earlier elements exist (e.g. {names})", "warning"))
    fraction = float((seen_count / np.maximum(past_count, 1))[past_count > 0].mean()) if (past_count > 0).any() else 1.0
    report.receptive_field.update({
        "max_elements": int(seen_count.max()),
        "mean_fraction_of_past_seen": round(fraction, 4),
    })
    if not ir.dense_output and ctx.spatial:
        _blind_spots_concrete(spec, ir, table, order, report, deps)


def _blind_concrete(seen: np.ndarray, e: int, coords: np.ndarray, order: np.ndarray) -> int:
    """Earlier elements inside the bounding box of what element e sees (and e itself) that it
    does not see. seen: (N,) over all elements."""
    pos = coords[e]
    pts = np.concatenate([coords[seen], pos[None]])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    inside = np.all((coords >= lo) & (coords <= hi), axis=1)
    return int((inside & (order < order[e]) & ~seen).sum())


def _blind_spots_concrete(spec, ir, table: np.ndarray, order: np.ndarray, report, deps: dict[str, Deps] | None) -> None:
    ctx = ir.ctx
    event = ctx.event
    coords = np.stack(np.unravel_index(np.arange(table.shape[1]), event), axis=1)[:, 1:]   # (N, nd) spatial
    blind_total, worst, worst_e, affected = 0, 0, None, 0
    for e in range(table.shape[0]):
        if not table[e].any():
            continue
        n = _blind_concrete(table[e], e, coords, order)
        if n:
            affected += 1
            blind_total += n
            if n > worst:
                worst, worst_e = n, e
    if affected:
        from arspec.analysis.report import element_name
        report.blind_spot = {"elements_affected": affected, "max_blind": worst, "total_blind": blind_total}
        assert worst_e is not None
        worst_element = int(worst_e)
        group, *pos = np.unravel_index(worst_element, event)

        def blind_at(node_deps: Deps) -> bool:
            rows = _serving_rows(node_deps, int(group), ctx.groups)
            seen = node_deps.rows[(rows,) + tuple(int(p) for p in pos)].any(axis=0)
            return bool(seen.any()) and _blind_concrete(seen, worst_element, coords, order) > 0

        origin = _first_node(ir, deps, blind_at)
        _warn_blind(spec, ir, report, origin, f"blind spot: {affected} element(s) cannot see earlier elements inside their receptive field "
                                              f"(up to {worst}, e.g. element {element_name(worst_element, event, tuple(spec.event.shape))})")


def _serving_rows(deps: Deps, group: int, groups: int) -> np.ndarray:
    """The rows of the channels that serve a data channel group (channel j serves j mod groups)."""
    channel = np.arange(deps.channels)
    return _rows_of(deps, channel[channel % groups == group])


def _rows_of(deps: Deps, channels: np.ndarray) -> np.ndarray:
    """The distinct rows of some channels (of every channel when there are none)."""
    return np.unique(deps.chan[channels] if len(channels) else deps.chan)


def _first_node(ir: IRGraph, deps: dict[str, Deps] | None, has_it) -> str | None:
    """The first op node at the event's resolution whose own dependency sets show a property."""
    if deps is None:
        return None
    for node in ir.op_nodes():
        if node.type.spatial == ir.ctx.spatial and node.name in deps and has_it(deps[node.name]):
            return node.name
    return None


def _warn_blind(spec, ir: IRGraph, report, origin: str | None, message: str) -> None:
    """The blind-spot warning, located at the first layer whose receptive field has the blind spot."""
    if origin is None or origin == ir.output:
        loc, path = _loc(ir, ir.output)
    else:
        loc, path = _loc(ir, origin)
        message += f"; it first appears at node {origin!r} (line {loc.line})"
    report.warnings.append(Problem(loc, path, message, "warning"))


def offset_checks(spec, ir: IRGraph, out: OffsetDeps, report, mask: int, deps: dict[str, Deps] | None = None) -> None:
    """The same checks on offset tables (exact for any image size; see analysis.periodic)."""
    from arspec.ordering import order_period
    ctx = ir.ctx
    tab = periodic.OffsetTable(out.element_offsets(ctx.groups, ctx.params_per_element), np.array(out.origin), out.fold)
    order = ctx.order(mask).reshape(ctx.event)
    ordering_period = order_period(spec.orderings[mask % len(spec.orderings)], ctx.event)
    assert ordering_period is not None, "the offset domain is used only for periodic orderings"
    period = math.lcm(out.fold, ordering_period)
    report.offsets, report.offset_origin, report.offset_fold = tab.table, tuple(out.origin), out.fold
    pairs, affected = periodic.leaks(tab, order, period)
    if pairs:
        _report_leaks(spec, ir, report, pairs[:8], affected, mask)
        return
    size = np.array(ctx.spatial)
    fields = {}
    for g in range(ctx.groups):
        for psi in periodic.classes(period, size):
            p = periodic.interior(psi, period, size)
            fields[(g, psi)] = (p, periodic.field(*tab.entries(g, psi), g, p, order))
    seeing = [f for _, f in fields.values() if f.seen]
    extent = ([min(v) for v in zip(*[f.extent[0] for f in seeing])], [max(v) for v in zip(*[f.extent[1] for f in seeing])]) if seeing else None
    report.offset_period = period
    report.receptive_field.update({"elements_seen_interior": max(f.seen for _, f in fields.values()),
                                   "extent": list(extent) if extent else None})
    worst_key, (worst_p, worst) = max(fields.items(), key=lambda kv: kv[1][1].blind)
    if worst.blind:
        report.blind_spot = {"blind_per_interior_element": worst.blind}
        g, psi = worst_key

        def blind_at(node_deps: Deps) -> bool:
            if not isinstance(node_deps, OffsetDeps) or node_deps.fold != 1 or node_deps.stride != 1:
                return False
            rows = node_deps.rows[_serving_rows(node_deps, g, ctx.groups)].any(axis=0)
            one = periodic.OffsetTable(rows[None, None], np.array(node_deps.origin), 1)
            return periodic.field(*one.entries(0, psi), g, worst_p, order).blind > 0

        _warn_blind(spec, ir, report, _first_node(ir, deps, blind_at),
                    f"blind spot: an interior element cannot see {worst.blind} earlier element(s) inside its receptive field")
    if any(f.seen == 0 and f.has_past for _, f in fields.values()):
        loc, path = _loc(ir, ir.output)
        report.warnings.append(Problem(loc, path, "dead context: some channel sees nothing although earlier elements exist", "warning"))
