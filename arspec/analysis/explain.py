"""Explaining a leak: the path a forbidden dependency takes, the node where it enters the value that
serves the element, the edge that brings it there (an input, a residual, a kernel tap), and a hint
for the classic causes. Everything is computed in the exact per-position domain, one source column
at a time, so every statement in a message is true of the model."""
from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx
import numpy as np

from arspec.analysis.propagate import concrete_data, node_footprint, propagate, term_deps
from arspec.domains import ConcreteDeps, Deps
from arspec.errors import Location
from arspec.ir.graph import IRGraph, IRNode
from arspec.primitives import Gate, MaskedConv, Shift, SpaceToDepth

MAX_TRACE_NODES = 400


@dataclass
class Explanation:
    """Why element `target` reads `source`."""

    path: list[str]                 # the nodes the dependency flows through, in order
    culprit: str                    # the node where it enters the value serving the target
    edge: str = ""                  # how it enters: "its residual 'h1'", "its input 'v0d'", "its kernel tap at (0, +1)"
    hint: str = ""
    location: Location | None = None
    route: list[str] = field(default_factory=list)   # one chain x -> ... -> culprit -> ... -> output
    via: str | None = None                           # the culprit's input the dependency enters through


def _route(ir: IRGraph, path: list[str], culprit: str, via: str | None) -> list[str]:
    """One chain of nodes through `path` that passes the culprit (entering it through `via`):
    what a reader follows, where the full path may hold parallel branches."""
    on_path = set(path)
    back, current, first = [culprit], culprit, via
    while True:
        preds = [i for i in ir.node(current).all_inputs if i in on_path and i not in back]
        if first in preds:
            preds = [first]
        first = None
        if not preds:
            break
        current = preds[0]
        back.append(current)
    forward, current = [], culprit
    successors: dict[str, list[str]] = {}
    for name in path:
        for i in ir.node(name).all_inputs:
            successors.setdefault(i, []).append(name)
    while successors.get(current):
        current = successors[current][-1]
        forward.append(current)
    return back[::-1] + forward


def trace_path(ir: IRGraph, source: int, target: int, mask: int = 0) -> list[str]:
    """The IR nodes through which data element `source` reaches the parameters of `target`,
    in topological order (exact: a node is listed iff some path through it carries the dependency)."""
    cols = np.array([source])
    forward = propagate(ir, concrete_data(ir, cols), mask)
    nodes = [n for n in ir if n.kind == "op" and forward[n.name].rows.any()]
    if len(nodes) > MAX_TRACE_NODES:
        return [n.name for n in nodes]
    return [n.name for n in nodes if _reaches(ir, n.name, forward[n.name], target, mask, cols)]


def _reaches(ir: IRGraph, name: str, taint: Deps, target: int, mask: int, cols: np.ndarray) -> bool:
    """Whether `taint`, put at node `name` (nothing else carrying the source), reaches the target's term."""
    through = propagate(ir, concrete_data(ir, cols), mask, fixed={name: taint})
    terms = term_deps(ir, through)
    assert isinstance(terms, ConcreteDeps)
    return bool(terms.element_table(ir.ctx.groups, ir.ctx.params_per_element, ir.dense_output)[target, 0])


def _restricted(deps: ConcreteDeps, channels: np.ndarray, at: tuple[int, ...] | None) -> ConcreteDeps:
    """The same dependency sets kept only for some channels (and, if given, one position)."""
    keep = np.zeros(deps.rows.shape, dtype=bool)
    if at is None:
        keep[:] = True
    else:
        index: tuple[slice | int, ...] = (slice(None), *at)
        keep[index] = True
    rows = np.concatenate([np.zeros((1,) + deps.rows.shape[1:], dtype=bool), deps.rows & keep])
    chan = np.zeros(deps.channels, dtype=int)
    chan[channels] = deps.chan[channels] + 1
    return ConcreteDeps(rows, chan, deps.columns)


def _serving_place(ir: IRGraph, node: IRNode, target: int, folds: set[int]) -> tuple[np.ndarray, tuple[int, ...] | None] | None:
    """The channels (and position) of a node's value that serve the target element: at the event's
    resolution its channel group's channels at its position; one space_to_depth coarser, its
    sub-position group's; a dense value: every unit. None where there is no single place."""
    t, event, groups = node.type, ir.ctx.event, ir.ctx.groups
    group, *pos = (int(v) for v in np.unravel_index(target, event))
    channel = np.arange(t.channels)
    if not t.spatial:
        return channel, None
    spatial = tuple(event[1:])
    if len(t.spatial) != len(spatial) or any(s % n for s, n in zip(spatial, t.spatial)):
        return None
    factors = {s // n for s, n in zip(spatial, t.spatial)}
    f = factors.pop() if len(factors) == 1 else 0
    if f == 1:
        return (channel if ir.ctx.couples_channels else channel[channel % groups == group]), tuple(pos)
    if f in folds:
        subs = f ** len(pos)
        sub = int(np.ravel_multi_index(tuple(p % f for p in pos), (f,) * len(pos)))
        serving = channel[channel % subs == sub] if t.channels % subs == 0 else channel
        return serving, tuple(p // f for p in pos)
    return None


def _illegal_units(ir: IRGraph, node: IRNode, deps: ConcreteDeps, source: int, mask: int) -> np.ndarray:
    """MADE units of a dense node that read `source` although their degree forbids it (a hidden
    unit of degree m may read elements of steps < m; an output unit for element e, steps < step(e))."""
    reads = deps.rows[deps.chan][:, 0].astype(bool) if deps.rows.ndim == 2 else np.zeros(0, dtype=bool)
    if node.type.degrees is None or not reads.any():
        return np.zeros(node.type.channels, dtype=bool)
    degree = np.asarray(node.type.degrees[mask % len(node.type.degrees)])
    step = int(ir.ctx.order(mask)[source])
    allowed = degree > step + 1 if node.name == ir.output else degree >= step + 1
    return reads & ~allowed


def frames(ir: IRGraph) -> dict[str, tuple[int, ...]]:
    """Per node, the shift its values still need before they serve their own positions: declared by
    ops such as vertical_conv2d ([1, 0]), kept through position-preserving nodes, reduced by
    shifts; zero once values of different frames are joined. A value is judged only in frame 0."""
    rank = len(ir.ctx.spatial)
    zero = (0,) * rank
    out: dict[str, tuple[int, ...]] = {}
    for node in ir:
        if node.kind != "op" or node.program is None or not node.type.spatial:
            out[node.name] = zero
            continue
        declared = _declared_shift(node, rank)
        if declared is not None:
            out[node.name] = declared
            continue
        inherited = {out.get(i, zero) for i in node.inputs if ir.node(i).kind == "op"}
        frame = inherited.pop() if len(inherited) == 1 and not (set(node.inputs) & {"x"}) else zero
        shifts = [c.primitive for c in node.program.calls if isinstance(c.primitive, Shift)]
        if shifts and frame != zero:
            frame = tuple(f - b for f, b in zip(frame, shifts[0].by))
        elif not _same_position(ir, node) or node.residual or node.conditions:
            frame = zero
        out[node.name] = frame
    _frames_of_inputs(ir, out, zero)
    return out


def _declared_shift(node: IRNode, rank: int) -> tuple[int, ...] | None:
    """The shift an op declares its output needs, over all spatial axes: a shift declared for images
    ([1, 0]) applies within each frame of a video ([0, 1, 0])."""
    declared = node.op.requires_shift(node.spec) if node.op is not None else None
    if declared is None:
        return None
    return (0,) * (rank - len(declared)) + tuple(declared)


def _frames_of_inputs(ir: IRGraph, out: dict[str, tuple[int, ...]], zero: tuple[int, ...]) -> None:
    """A value read only by ops whose output still needs a shift (the concat feeding PixelRNN's
    mirrored LSTM), or only by values that are in a frame this way, is in that frame too: it may
    read its own row, as the op may. A value fed to an op that shifts its input itself (a video's
    encoder, read by the conv_lstm a frame later) may read its whole frame: a leak through it is
    judged where it also joins anything else."""
    readers = {name: [node for node, _ in uses] for name, uses in _readers(ir).items()}
    backward: set[str] = set()
    for node in reversed(list(ir)):
        if node.kind != "op" or not node.type.spatial or out[node.name] != zero or node.name == ir.output:
            continue
        needed, wanted = set(), set()
        for reader in readers.get(node.name, []):
            declared = _declared_shift(reader, len(zero))
            shifts_input = reader.op.input_frame(reader.spec) if reader.op is not None else None
            if node.name not in reader.inputs:
                needed.add(zero)
            elif declared is not None:
                needed.add(declared)
            elif shifts_input is not None:
                wanted.add(tuple(shifts_input))
            else:
                needed.add(out[reader.name] if reader.name in backward else zero)
        framed = {f for f in needed | wanted if f != zero}
        if (wanted and len(framed) == 1) or (len(needed) == 1 and zero not in needed):
            out[node.name] = framed.pop()
            backward.add(node.name)


def _readers(ir: IRGraph) -> dict[str, list[tuple[IRNode, int]]]:
    """Per value, the nodes that read it and at which index of their `all_inputs`."""
    readers: dict[str, list[tuple[IRNode, int]]] = {}
    for node in ir:
        for k, i in enumerate(node.all_inputs):
            readers.setdefault(i, []).append((node, k))
    return readers


def keys_only(ir: IRGraph) -> set[str]:
    """Values read only as the keys and values of attention: a key at a position serves the
    queries the attention rule allows, not that position's own element, so it is judged where
    the attention reads it."""
    out = set()
    for name, uses in _readers(ir).items():
        if name != ir.output and all(r.op is not None and r.op.name == "causal_attention" and 1 <= k < len(r.inputs) for r, k in uses):
            out.add(name)
    return out


def _same_position(ir: IRGraph, node: IRNode) -> bool:
    """All of the node's calls read their arguments at the position they compute."""
    rank = len(ir.ctx.spatial)
    for c in node.program.calls if node.program else []:
        taps = c.primitive.taps(rank, len(c.args))
        if taps is None or any(o != (0,) * rank for t in taps for o, live in zip(t.offsets, t.live) if live):
            return False
    return True


def find_culprit(ir: IRGraph, path: list[str], source: int, target: int, mask: int) -> str:
    """The first node on the path whose value serving the target reads the source, where that
    value really flows to the target (for MADE layers: the first whose units break their degrees).
    Values that still need a shift (a vertical stack) are judged where they join others."""
    if not path:
        return ir.output
    cols = np.array([source])
    forward = propagate(ir, concrete_data(ir, cols), mask)
    frame = frames(ir)
    zero = (0,) * len(ir.ctx.spatial)
    folds = {c.primitive.factor for n in ir.op_nodes() if n.program for c in n.program.calls if isinstance(c.primitive, SpaceToDepth)}
    merges: list[str] = []
    keys = keys_only(ir)
    for name in path:
        node = ir.node(name)
        deps = forward[name]
        assert isinstance(deps, ConcreteDeps)
        if name in keys:
            continue
        if node.op is not None and node.op.moves_only:
            merges.extend([name] if len(node.inputs) > 1 else [])
            continue
        if not node.type.spatial:
            bad = np.nonzero(_illegal_units(ir, node, deps, source, mask))[0]
            if len(bad) and _reaches(ir, name, _restricted(deps, bad, None), target, mask, cols):
                return name
            continue
        place = _serving_place(ir, node, target, folds)
        if place is None or (frame.get(name, zero) != zero and name != ir.output):    # the output serves its positions as it is
            continue
        channels, at = place
        rows = np.unique(deps.chan[channels]) if len(channels) else np.unique(deps.chan)
        if deps.rows[(rows,) + tuple(at or ())].any() and _reaches(ir, name, _restricted(deps, channels, at), target, mask, cols):
            return name
    return merges[0] if merges else path[0]


def joining_reader(ir: IRGraph, path: list[str], culprit: str, source: int, mask: int) -> str:
    """The node to blame for a leak first seen in `culprit`'s value. When that value also carries
    the source to the output off the leaking path (through a shift, say: an embedding used both
    shifted and raw), the value is not at fault but the edge that joins it to the leaking path: the
    first reader of it on the path. Otherwise the culprit itself."""
    on_path = set(path)
    first = int(np.argmin(ir.ctx.order(mask)))        # a probe a forward shift keeps inside the event
    forward = propagate(ir, concrete_data(ir, np.unique([source, first])), mask)
    readers = [r for r, _ in _readers(ir).get(culprit, [])]
    joining = [r.name for r in readers if r.name in on_path]
    reaching = nx.ancestors(ir.graph, ir.output) | {ir.output}
    elsewhere = [r for r in readers if r.name not in on_path and r.name in reaching and forward[r.name].rows.any()]
    if culprit == ir.output or not joining or not elsewhere:
        return culprit
    return min(joining, key=path.index)


def explain(ir: IRGraph, source: int, target: int, mask: int = 0) -> Explanation:
    """The path, culprit node, entering edge and hint of one leaking pair."""
    path = trace_path(ir, source, target, mask)
    culprit = joining_reader(ir, path, find_culprit(ir, path, source, target, mask), source, mask)
    out = Explanation(path, culprit, location=ir.node(culprit).location)
    out.route = _route(ir, path, culprit, None)
    node = ir.node(culprit)
    if node.kind != "op" or node.program is None:
        return out
    forward = propagate(ir, concrete_data(ir, np.array([source])), mask)
    carriers = _carrying_inputs(ir, node, forward, source, target, mask)
    out.edge, out.hint, where = _describe(ir, node, carriers, forward, target)
    out.location = where or out.location
    out.via = node.all_inputs[carriers[0]] if carriers else None
    out.route = _route(ir, path, culprit, out.via)
    return out


def _carrying_inputs(ir: IRGraph, node: IRNode, forward: dict[str, Deps], source: int, target: int, mask: int) -> list[int]:
    """Indices (in `all_inputs`) of the inputs through which the source reaches the node's value
    serving the target: the node's program with only that input carrying dependencies."""
    folds: set[int] = set()
    place = _serving_place(ir, node, target, folds)
    inputs = [forward[i] for i in node.all_inputs]
    carriers = []
    for k, deps in enumerate(inputs):
        if not deps.rows.any():
            continue
        alone = [d if i == k else d.empty(ir.node(node.all_inputs[i]).type.channels, ir.node(node.all_inputs[i]).type.spatial)
                 for i, d in enumerate(inputs)]
        result = node_footprint(node, alone, mask)
        assert isinstance(result, ConcreteDeps)
        if place is None or not node.type.spatial:   # dense units or no single place: follow the value to the term
            hit = _reaches(ir, node.name, result, target, mask, np.array([source]))
        else:
            channels, at = place
            rows = np.unique(result.chan[channels]) if len(channels) else np.unique(result.chan)
            hit = result.rows[(rows,) + tuple(at or ())].any()
        if hit:
            carriers.append(k)
    return carriers


def _role(node: IRNode, k: int) -> str:
    if k < len(node.inputs):
        return "input"
    if k < len(node.inputs) + len(node.conditions):
        return "condition"
    return "residual"


def _describe(ir: IRGraph, node: IRNode, carriers: list[int], forward: dict[str, Deps], target: int) -> tuple[str, str, Location | None]:
    """(edge, hint, location) for the culprit node."""
    edges = [f"its {_role(node, k)} '{node.all_inputs[k]}'" for k in carriers]
    roles = {_role(node, k) for k in carriers}
    where = node.field_locations.get("residual") if roles == {"residual"} else None
    taps = _future_taps(ir, node, target)
    hint = _hint(ir, node, carriers, taps)
    edge = " and ".join(edges)
    if taps and roles <= {"input"}:
        edge += f" at the kernel tap{'s' if len(taps) > 1 else ''} {', '.join(taps)}"
    return edge, hint, where


def _future_taps(ir: IRGraph, node: IRNode, target: int) -> list[str]:
    """Kernel taps of the node's convolution reading at or after the target's position (raster)."""
    assert node.program is not None
    convs = [c.primitive for c in node.program.calls if isinstance(c.primitive, MaskedConv)]
    if len(convs) != 1 or not node.type.spatial:
        return []
    conv = convs[0]
    out = []
    for tap in np.argwhere(conv.connectivity.any(axis=(0, 1))):
        offset = tuple(int(t) * d - b for t, d, b in zip(tap, conv.dilation, conv.pad_before))
        if offset > (0,) * len(offset):
            out.append("(" + ", ".join(f"{o:+d}" for o in offset) + ")")
    return out


def _hint(ir: IRGraph, node: IRNode, carriers: list[int], taps: list[str]) -> str:
    """The classic cause this leak looks like, in the spec's own terms."""
    spec, op = node.spec, node.op
    if ir.ctx.agnostic:
        return ("the data reaches this layer without passing the observe gate: an order-agnostic model reads x only "
                "through {op: observe, inputs: [x]}, which hides the elements not given yet")
    roles = {_role(node, k) for k in carriers}
    sources = [ir.node(node.all_inputs[k]) for k in carriers]
    if op is not None and op.name == "causal_attention" and roles <= {"input"}:
        return _attention_hint(ir, node)
    frame = frames(ir)
    for src in sources:
        why = _frame_hint(ir, src, frame)
        if why:
            return why
    if any(isinstance(c.primitive, Shift) for c in node.program.calls):  # type: ignore[union-attr]
        by = next(list(c.primitive.by) for c in node.program.calls if isinstance(c.primitive, Shift))  # type: ignore[union-attr]
        return f"this shift by {by} moves later values onto earlier positions: check its axis and sign (a vertical stack is shifted by [1, 0])"
    if getattr(spec, "mask", None) == "B" and _reads_data_directly(ir, node):
        return "mask B lets a position see its own element: the first layer, which reads x, needs mask A"
    if op is not None and op.moves_only and len(node.inputs) > 1:
        return f"this merge puts a prediction in the wrong place: check the order of its inputs {node.inputs} (the coarser prediction first)"
    if ir.ctx.groups > 1 and getattr(spec, "mask", None) == "none":
        return "in an R→G→B model every layer on the data path needs a channel-group mask: mask B (or A) on this layer"
    if taps and getattr(spec, "padding", None) not in (None, "causal"):
        return f"padding {spec.padding!r} reads the future: use padding: causal (pad only the past)"
    if op is not None and op.name == "embedding" and not getattr(spec, "shift", 0):
        return "the embedding reads each element itself: give it shift: 1 (the one-step delay of WaveNet's input)"
    joined = _shifted_elsewhere(ir, node, sources)
    if joined:
        return joined
    if roles == {"residual"}:
        return "the residual adds values that may see later elements here: a residual must join a value with the same dependencies (same masks, same shifts)"
    groups = ir.ctx.groups
    masked = getattr(spec, "mask", None) in ("A", "B")
    gates = [c for c in node.program.calls if isinstance(c.primitive, Gate)]  # type: ignore[union-attr]
    if groups > 1 and gates and node.type.channels % groups:
        return (f"the channel-group rule: channel j serves data channel j mod {groups}, so a gate, which multiplies channel j "
                f"by channel j + {node.type.channels}, needs halves that are a multiple of {groups}: give the layer before it "
                f"a multiple of {2 * groups} channels (it has {2 * node.type.channels})")
    odd = [t for t in [node, *sources] if t.type.channels % groups]
    if groups > 1 and masked and odd:
        return (f"the channel-group rule: channel counts must be multiples of the {groups} channel groups (channel j serves "
                f"data channel j mod {groups}); '{odd[0].name}' has {odd[0].type.channels} channels")
    if ir.ctx.couples_channels and masked:
        return "a coupled likelihood reads a whole pixel's parameters: mask over whole pixels with channel_groups: 1"
    return ""


def _shifted_elsewhere(ir: IRGraph, node: IRNode, sources: list[IRNode]) -> str:
    """For a value this node joins unshifted that the rest of the model reads through a shift: use
    the shifted one here too."""
    for src in sources:
        for reader, _ in _readers(ir).get(src.name, []):
            calls = reader.program.calls if reader.program is not None and reader.name != node.name else []
            shift = next((c.primitive for c in calls if isinstance(c.primitive, Shift)), None)
            if shift is not None:
                return (f"'{src.name}' is read elsewhere through the shift by {list(shift.by)} of '{reader.name}' "
                        f"(line {_line(reader)}), but this node joins it unshifted: read '{reader.name}' here instead")
    return ""


def _attention_hint(ir: IRGraph, node: IRNode) -> str:
    """The classic attention causes, in the spec's terms."""
    spec = node.spec
    if getattr(spec, "causal", None) == "none":
        return ("causal: none lets every position attend to every other, later ones included; a window only narrows "
                "the set: use causal: strict (or non_strict over shifted inputs) and keep the window beside it")
    if ir.ctx.groups > 1 and getattr(spec, "channel_groups", None) == 1:
        return (f"with channel_groups: 1 a whole pixel is one token, carrying the features of later channel groups to earlier "
                f"ones: keep the {ir.ctx.groups} channel groups as tokens (the default) so the attention follows R -> G -> B")
    if getattr(spec, "causal", None) == "non_strict":
        return ("non-strict attention lets a position attend to itself, but its keys or queries read that position's own "
                "element: make it causal: strict, or shift its inputs one step first")
    return "strict attention reads only earlier tokens: the queries themselves must not read the element (use a mask-A or shifted input)"


def _frame_hint(ir: IRGraph, node: IRNode, frame: dict[str, tuple[int, ...]]) -> str:
    """For an input still needing a shift: the missing shift, or the shift that went the wrong way."""
    need = frame.get(node.name)
    if not need or not any(need):
        return ""
    shifter = _frame_shifter(ir, node)
    if shifter is not None and shifter.name != node.name and tuple(shifter.op.input_frame(shifter.spec) or ()) == tuple(need):  # type: ignore[union-attr]
        return (f"'{node.name}' feeds {shifter.op.name} '{shifter.name}' (line {_line(shifter)}), which reads it "  # type: ignore[union-attr]
                f"{_moves(list(need))}, so it may see its whole frame; here it also joins values of the same positions "
                f"directly: let it reach them only through '{shifter.name}'")
    current: IRNode | None = node
    while current is not None and current.kind == "op":
        shifts = [c.primitive for c in (current.program.calls if current.program else []) if isinstance(c.primitive, Shift)]
        if shifts:
            wanted = [a + b for a, b in zip(need, shifts[0].by)]
            return (f"the shift by {list(shifts[0].by)} of '{current.name}' (line {_line(current)}) should be {wanted}: "
                    f"the values it moves read their own row, so they must move {_moves(wanted)} before they join values "
                    f"of the same positions (check the shift's axis and sign)")
        declared = _declared_shift(current, len(need))
        if declared is not None and "shift" in type(current.spec).model_fields:
            return (f"the output of {current.op.name} '{current.name}' (line {_line(current)}) has read the positions it "  # type: ignore[union-attr]
                    f"serves: give it shift: {max(declared)} (its state after frame t "
                    f"then serves frame t + 1)")
        if declared is not None:
            return (f"the output of {current.op.name} '{current.name}' (line {_line(current)}) reads its own row: shift it by "  # type: ignore[union-attr]
                    f"{list(declared)} (op: shift) before it joins values of the same positions")
        data_inputs = [ir.node(i) for i in current.inputs if ir.node(i).kind == "op"]
        current = data_inputs[0] if len(data_inputs) == 1 else None
    return ""


def _frame_shifter(ir: IRGraph, node: IRNode) -> IRNode | None:
    """The first op downstream of `node` that shifts its input by frames itself (a conv_lstm)."""
    readers = {name: [r for r, _ in uses] for name, uses in _readers(ir).items()}
    seen, queue = set(), [node]
    while queue:
        current = queue.pop(0)
        for reader in readers.get(current.name, []):
            if reader.name in seen:
                continue
            seen.add(reader.name)
            if reader.op is not None and reader.op.input_frame(reader.spec) is not None:
                return reader
            queue.append(reader)
    return None


def _moves(by: list[int]) -> str:
    """[1, 0] -> 'down 1 row', [1, 0, 0] -> '1 frame later'; other shifts as offsets."""
    if len(by) == 3 and by[0] > 0 and not any(by[1:]):
        return f"{by[0]} frame{'s' if by[0] > 1 else ''} later"
    if len(by) == 3 and by[0] == 0 and by[2] == 0 and by[1] > 0:
        return f"down {by[1]} row{'s' if by[1] > 1 else ''} (within the frame)"
    if len(by) == 2 and by[1] == 0 and by[0] > 0:
        return f"down {by[0]} row{'s' if by[0] > 1 else ''}"
    if len(by) == 1 and by[0] > 0:
        return f"{by[0]} step{'s' if by[0] > 1 else ''} later"
    return f"by {by}"


def _line(node: IRNode) -> str:
    return str(node.location.line) if node.location else "?"


def _reads_data_directly(ir: IRGraph, node: IRNode) -> bool:
    """The node reads x itself, or through rearrangements only (space_to_depth, select_groups)."""
    for name in node.inputs:
        current = ir.node(name)
        while current.kind == "op" and current.op is not None and current.op.moves_only and current.inputs:
            current = ir.node(current.inputs[0])
        if current.kind == "data":
            return True
    return False
