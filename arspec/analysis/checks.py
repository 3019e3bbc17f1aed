"""The checks run on propagated dependency sets: leak, conditioning leak, blind spot, dead
context, receptive field. Each adds located problems to the report."""
from __future__ import annotations

import math

import numpy as np

from arspec.analysis import periodic
from arspec.analysis.confirm import confirmed
from arspec.analysis.explain import Explanation, explain
from arspec.domains import ConcreteDeps, Deps, OffsetDeps
from arspec.errors import Location, Problem
from arspec.ir.graph import IRGraph, IRNode
from arspec.ordering import OBSERVED, compute_raster

MAX_REPORTED = 5
MAX_TRACE_NODES = 400


def _loc(ir: IRGraph, name: str):
    node = ir.node(name)
    return node.location, node.spec_path


def unused_nodes(ir: IRGraph, report) -> None:
    """Warn about nodes whose value never reaches the output: their parameters are trained for
    nothing, and they usually mean a wrong `inputs:`. A block node counts as used when any repeat
    of it is (the last vertical stack of a Gated PixelCNN is legitimately unread)."""
    import networkx as nx
    used = nx.ancestors(ir.graph, ir.output) | {ir.output}
    by_place: dict[str, list[IRNode]] = {}
    for node in ir:
        if node.kind == "op":
            by_place.setdefault(node.spec_path, []).append(node)
    for place, nodes in by_place.items():
        if not any(n.name in used for n in nodes):
            node = nodes[0]
            weights = sum(n.parameters for n in nodes)
            cost = f" ({weights:,} parameters trained for nothing)" if weights else ""
            report.warnings.append(Problem(node.location or Location(ir.source.filename if ir.source else "<spec>", 1, 1), place, f"unused node: {node.name!r} never reaches the output {ir.output!r}{cost}; "
                                                                 "check the `inputs:` of the nodes after it", "warning"))


def conditioning_leaks(spec, ir: IRGraph, deps: dict[str, Deps], report) -> None:
    """A conditioning path must never read the data x."""
    for node in ir.op_nodes():
        for c in node.conditions:
            if deps[c].rows.any():
                loc, path = _loc(ir, node.name)
                src = ir.node(c)
                report.errors.append(Problem(loc, f"{path}.condition", f"conditioning leak: {c!r} (at {src.location}) reads the data x, "
                                                                        f"so node {node.name!r} sees every element through its conditioning path"))


def _line(ir: IRGraph, name: str) -> int:
    location = ir.node(name).location
    return location.line if location else 0


def _short_chain(ir: IRGraph, path: list[str], culprit: str) -> str:
    """The path from x to the output, kept whole around the culprit (the four nodes leading into
    it) and elided elsewhere, so the edge that introduces the leak is always visible."""
    names = [f"{n} (line {_line(ir, n)})" for n in path]
    if len(names) <= 9:
        return " -> ".join(["x"] + names)
    at = path.index(culprit) if culprit in path else len(path) - 1
    keep = sorted({0, 1, *range(max(0, at - 4), at + 1), len(path) - 1})
    parts, previous = ["x"], -1
    for i in keep:
        if i - previous > 1:
            parts.append(f"... {i - previous - 1} more")
        parts.append(names[i])
        previous = i
    return " -> ".join(parts)


def _report_leaks(spec, ir: IRGraph, report, pairs: list[tuple[int, int]], affected: int, mask: int, note: str = "") -> None:
    """One error per place where a forbidden dependency enters (repeats of a block share one):
    its first example, the edge and a hint, how many elements leak, and the path."""
    from arspec.analysis.report import element_name
    event, user = ir.ctx.event, tuple(spec.event.shape)
    order = ir.ctx.order(mask)
    by_place: dict[str, tuple[Explanation, int, int]] = {}
    for target, source in pairs:
        why = explain(ir, source, target, mask)
        by_place.setdefault(ir.node(why.culprit).spec_path, (why, target, source))
    masks = f" [mask {mask}]" if ir.ctx.masks > 1 else ""
    culprits = {why.culprit for why, _, _ in by_place.values()}
    for why, target, source in by_place.values():
        upstream = culprits & set(why.path[: why.path.index(why.culprit)] if why.culprit in why.path else [])
        if upstream:   # a consequence of a leak already reported where it enters: fix that one first
            continue
        spec_path = ir.node(why.culprit).spec_path
        relation = "itself" if source == target else f"element {element_name(source, event, user)} (step {order[source]})"
        enters = f"it enters at node {why.culprit!r}" + (f" through {why.edge}" if why.edge else "")
        hint = f"; hint: {why.hint}" if why.hint else ""
        report.leaks.append({"target": target, "source": source, "mask": mask, "culprit": why.culprit,
                             "via": why.via, "route": why.route or why.path})
        if ir.ctx.agnostic:      # one step for all: what is read is read whether it is given or not
            relation = "itself" if source == target else f"element {element_name(source, event, user)}"
            what = (f"leak: the prediction of element {element_name(target, event, user)} reads {relation} even when it is not "
                    f"observed ({affected} element(s) affected{note})")
        else:
            what = (f"leak{masks}: element {element_name(target, event, user)} (step {order[target]}) reads {relation}, "
                    f"which is not generated before it ({affected} element(s) affected{note})")
        report.errors.append(Problem(why.location or Location(spec.filename, 1, 1), spec_path,
                                     f"{what}; {enters}{hint}; path: {_short_chain(ir, why.route or why.path, why.culprit)}"))


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
    if mask == 0:
        report.dependencies = table
    if len(leaks):
        _report_leaks(spec, ir, report, _pick_pairs(leaks), len(np.unique(leaks[:, 0])), mask)
        return
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


def _blind_concrete(seen: np.ndarray, e: int, coords: np.ndarray, order: np.ndarray, video: bool = False, raster: bool = False) -> int:
    """Earlier elements inside the bounding box of what element e sees (and e itself) that it
    does not see. seen: (N,) over all elements. In a video the box is taken within e's own frame:
    earlier frames reach it through a recurrence whose reach grows frame by frame, and a finite
    reach there is a design choice, not a hole in the frame being generated."""
    pos = coords[e]
    if video:
        seen = seen & (coords[:, 0] == pos[0])
    pts = np.concatenate([coords[seen], pos[None]])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    if raster:                       # rows above and to the right mean something in raster order only
        lo, hi = periodic.symmetric_rows(lo, hi, pos, coords.max(axis=0), coords[seen].T)
    inside = np.all((coords >= lo) & (coords <= hi), axis=1)
    if video:
        inside &= coords[:, 0] == pos[0]
    return int((inside & (order < order[e]) & ~seen).sum())


def _blind_spots_concrete(spec, ir, table: np.ndarray, order: np.ndarray, report, deps: dict[str, Deps] | None) -> None:
    ctx = ir.ctx
    event = ctx.event
    coords = np.stack(np.unravel_index(np.arange(table.shape[1]), event), axis=1)[:, 1:]   # (N, nd) spatial
    video = len(spec.event.shape) == 4
    raster = bool(np.array_equal(np.asarray(order).reshape(-1), compute_raster(event)))
    blind_total, worst, worst_e, affected = 0, 0, None, 0
    for e in range(table.shape[0]):
        if not table[e].any():
            continue
        n = _blind_concrete(table[e], e, coords, order, video, raster)
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
            return bool(seen.any()) and _blind_concrete(seen, worst_element, coords, order, video, raster) > 0

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
    video = len(spec.event.shape) == 4
    ordering_period = order_period(spec.orderings[mask % len(spec.orderings)], ctx.event)
    assert ordering_period is not None, "the offset domain is used only for periodic orderings"
    period = math.lcm(out.fold, ordering_period)
    report.offsets, report.offset_origin, report.offset_fold = tab.table, tuple(out.origin), out.fold
    pairs, affected = periodic.leaks(tab, order, period)
    if pairs:   # confirmed per position first: borders can make an offset unreachable
        pairs, affected, exact = confirmed(ir, pairs, affected, mask)
        if pairs:
            _report_leaks(spec, ir, report, _pick_pairs(np.array(pairs)), affected, mask,
                          note="" if exact else " (found by the offset analysis; not confirmed per position at this size)")
            return
    size = np.array(ctx.spatial)
    fields = {}
    for g in range(ctx.groups):
        for psi in periodic.classes(period, size):
            p = periodic.interior(psi, period, size)
            fields[(g, psi)] = (p, periodic.field(*tab.entries(g, psi), g, p, order, video))
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
            return periodic.field(*one.entries(0, psi), g, worst_p, order, video).blind > 0

        _warn_blind(spec, ir, report, _first_node(ir, deps, blind_at),
                    f"blind spot: an interior element cannot see {worst.blind} earlier element(s) inside its receptive field")
    if any(f.seen == 0 and f.has_past for _, f in fields.values()):
        loc, path = _loc(ir, ir.output)
        report.warnings.append(Problem(loc, path, "dead context: some channel sees nothing although earlier elements exist", "warning"))


def observe_gates(ir: IRGraph) -> tuple[list[str], list[str]]:
    """An order-agnostic graph's observe gates, and the other nodes that read the mask `observed`."""
    from arspec.primitives import ObserveGate
    gates, fed = [], []
    for node in ir.op_nodes():
        assert node.program is not None
        if any(isinstance(c.primitive, ObserveGate) for c in node.program.calls):
            gates.append(node.name)
        elif OBSERVED in node.all_inputs:
            fed.append(node.name)
    return gates, fed


def agnostic_checks(ir: IRGraph, report) -> None:
    """An order-agnostic model: name the observe gates that guarantee it (the leak check has shown
    that x reaches the output only through them), and warn when the mask `observed` is fed to the
    network nowhere but in the gates (it then cannot tell an observed 0 from a missing element)."""
    gates, fed = observe_gates(ir)
    report.agnostic = {"gates": gates, "mask_inputs": fed}
    loc, path = _loc(ir, ir.output)
    if not gates:
        report.warnings.append(Problem(loc, path, "order-agnostic model without an observe gate: it never reads the data", "warning"))
    if not fed:
        where = _loc(ir, gates[0]) if gates else (loc, path)
        report.warnings.append(Problem(where[0], where[1],
                                       "the mask `observed` is not fed to the network (only used in the gate): it cannot tell an "
                                       "observed 0 from an element not given; concatenate it beside the gate ({op: concat, inputs: [gate, observed]})",
                                       "warning"))
