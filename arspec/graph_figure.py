"""The picture `arspec graph` draws: the receptive field of one element, channel by channel, beside
the op graph. Leaking specs are drawn too: the elements read too early and the edge that lets
them in are red."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from arspec.analysis.report import Report
from arspec.ordering import internal_event

# categories of the receptive-field map, drawn in this order (later wins)
LATER, EARLIER, BLIND, SEEN, LEAK, SELF, GAP = range(7)
CATEGORY_COLOURS = {LATER: "#ebebeb", EARLIER: "#aaaaaa", BLIND: "#d33682", SEEN: "#2e8b57", LEAK: "#dc322f", SELF: "#268bd2",
                    GAP: "#ffffff"}
CATEGORY_NAMES = {SELF: "the element", SEEN: "read by it", LEAK: "read too early (leak)", BLIND: "blind spot",
                  EARLIER: "earlier, not read", LATER: "later"}
KIND_COLOURS = {"data": "#93c5fd", "context": "#fde68a", "op": "#a7f3d0"}
CHANNEL_NAMES = {3: "RGB"}
MAX_CHANNEL_PANELS = 4

FONT_POINTS = 7.0
CHAR_INCHES = 0.602 * FONT_POINTS / 72          # advance of one DejaVu Sans Mono character
BOX_PAD_INCHES = 0.3 * FONT_POINTS / 72 * 2     # the text box's padding on both sides
NODE_GAP_INCHES = 0.18
LAYER_INCHES = 0.62


def internal_shape(event_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The (channels, *positions) shape analysis uses: a 1-D event [T] is one channel of T, a
    video [T, C, H, W] is C channels over (T, H, W)."""
    return internal_event(event_shape)


def internal_index(element: tuple[int, ...], event_shape: tuple[int, ...]) -> tuple[int, ...]:
    """An element as the user writes it ([T]: (t,); videos: (t, c, y, x)) in the internal shape."""
    if len(event_shape) == 1:
        return (0, *element)
    if len(event_shape) == 4:
        return (element[1], element[0], *element[2:])
    return tuple(element)


def user_index(index: tuple[int, ...], event_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The inverse of `internal_index`."""
    if len(event_shape) == 1:
        return tuple(index[1:])
    if len(event_shape) == 4:
        return (index[1], index[0], *index[2:])
    return tuple(index)


def internal_order(report: Report) -> np.ndarray:
    """The report's steps (laid out as the event) in the internal flat layout of its elements."""
    order = np.asarray(report.order)
    return (order.transpose(1, 0, 2, 3) if len(report.event_shape) == 4 else order).reshape(-1)


def default_element(report: Report) -> tuple[int, ...]:
    """The element to draw when none is asked for: a leaking element if the spec leaks, else the
    centre of the event (its last channel, which reads the most)."""
    shape = internal_shape(report.event_shape)
    if report.leaks:
        index = tuple(int(i) for i in np.unravel_index(report.leaks[0]["target"], shape))
    else:
        index = (shape[0] - 1,) + tuple(s // 2 for s in shape[1:])
    return user_index(index, report.event_shape)


def field_categories(report: Report, element: tuple[int, ...]) -> np.ndarray:
    """Per element of the event (internal shape), what it is to `element`: read, read too early,
    in the blind spot (in a video: within its own frame), earlier, later, or the element itself."""
    shape = internal_shape(report.event_shape)
    index = internal_index(element, report.event_shape)
    flat = int(np.ravel_multi_index(index, shape))
    read = np.zeros(int(np.prod(shape)), dtype=bool)
    read[sorted(report.dependency_set(flat))] = True
    order = internal_order(report)
    earlier = order < order[flat]
    codes = np.where(earlier, EARLIER, LATER)
    if _raster_like(order.reshape(shape[0], -1)):
        blind = np.zeros(shape, dtype=bool)
        if len(report.event_shape) == 4:             # within the element's own frame
            t = index[1]
            blind[:, t] = _blind(read.reshape(shape)[:, t], earlier.reshape(shape)[:, t], (index[0], *index[2:]))
        else:
            blind = _blind(read.reshape(shape), earlier.reshape(shape), index)
        codes[blind.reshape(-1)] = BLIND
    codes[read & earlier] = SEEN
    codes[read & ~earlier] = LEAK
    codes[flat] = LEAK if read[flat] else SELF
    return codes.reshape(shape)


def frame_strip(codes: np.ndarray, position: tuple[int, ...]) -> tuple[np.ndarray, tuple[int, int]]:
    """A video channel's map (T, H, W) as frames side by side, one blank column between them; and
    where (t, y, x) lands in it, as (row, column)."""
    frames, height, width = codes.shape
    strip = np.full((height, frames * (width + 1) - 1), GAP, dtype=codes.dtype)
    for t in range(frames):
        strip[:, t * (width + 1):t * (width + 1) + width] = codes[t]
    t, y, x = position
    return strip, (y, t * (width + 1) + x)


def _raster_like(order: np.ndarray) -> bool:
    """Whether positions are generated one after another (all channels of a position before the
    next): only then does the bounding box of what is read frame a meaningful blind spot."""
    return bool(np.all(order.max(axis=0)[:-1] < order.min(axis=0)[1:]))


def _blind(read: np.ndarray, earlier: np.ndarray, index: tuple[int, ...]) -> np.ndarray:
    """Earlier elements inside the box spanned by what is read (and the element) but not read."""
    positions = np.argwhere(read.any(axis=0))
    if not len(positions):
        return np.zeros_like(read)
    points = np.concatenate([positions, np.array([index[1:]])])
    lo, hi = points.min(axis=0), points.max(axis=0)
    box = np.zeros(read.shape[1:], dtype=bool)
    box[tuple(slice(a, b + 1) for a, b in zip(lo, hi))] = True
    return box[None] & earlier & ~read


@dataclass(frozen=True)
class NodeBox:
    """Where an op-graph node is drawn, in inches from the panel's origin."""

    x: float
    y: float
    width: float
    label: str


def graph_layout(ir: Any) -> dict[str, NodeBox]:
    """Layered layout of the op graph, top to bottom by depth; within a layer nodes sit side by
    side in the order of their inputs' positions, each as wide as its label, so labels never overlap."""
    depth: dict[str, int] = {}
    for node in ir:
        depth[node.name] = 1 + max((depth[i] for i in node.all_inputs), default=-1)
    layers: dict[int, list[str]] = {}
    for name, d in depth.items():
        layers.setdefault(d, []).append(name)
    boxes: dict[str, NodeBox] = {}
    for d in sorted(layers):
        def anchor(name: str) -> float:
            xs = [boxes[i].x for i in ir.node(name).all_inputs if i in boxes]
            return float(np.mean(xs)) if xs else 0.0
        names = sorted(layers[d], key=anchor)
        labels = [_label(ir.node(n)) for n in names]
        widths = [max(len(line) for line in label.split("\n")) * CHAR_INCHES + BOX_PAD_INCHES for label in labels]
        total = sum(widths) + NODE_GAP_INCHES * (len(widths) - 1)
        left = -total / 2
        for name, label, width in zip(names, labels, widths):
            boxes[name] = NodeBox(left + width / 2, -d * LAYER_INCHES, width, label)
            left += width + NODE_GAP_INCHES
    return boxes


def _label(node: Any) -> str:
    kind = node.op.name if node.op is not None else node.kind
    return f"{node.name}\n{kind}"


def graph_figure(spec: Any, report: Report, element: tuple[int, ...]) -> Any:
    """The whole picture as a matplotlib Figure (the caller saves or inspects it)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    boxes = graph_layout(spec.ir)
    xs = [b.x - b.width / 2 for b in boxes.values()] + [b.x + b.width / 2 for b in boxes.values()]
    ys = [b.y for b in boxes.values()]
    spread = max(max(xs) - min(xs), 4.0)            # room for the panel's title
    centre = (max(xs) + min(xs)) / 2
    xs = [centre - spread / 2, centre + spread / 2]
    graph_w, graph_h = spread + 0.6, max(ys) - min(ys) + 1.2
    codes = field_categories(report, element)
    one_dim = len(report.event_shape) == 1
    video = len(report.event_shape) == 4
    panels = 1 if one_dim else min(codes.shape[0], MAX_CHANNEL_PANELS)
    field_w = 9.0 if one_dim else (max(3.2, 1.2 * codes.shape[1]) if video else 3.2) * panels
    field_h = 2.6 if one_dim else 4.2
    fig_w, fig_h = field_w + graph_w + 0.8, max(field_h + 1.4, graph_h + 0.8)
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=110)
    title = f"{spec.name}: " + ("not autoregressive" if report.leaks else "autoregressive")
    fig.text(0.3 / fig_w, 1 - 0.2 / fig_h, title, va="top", fontsize=11, color="#dc322f" if report.leaks else "black")
    top = (fig_h - 1.0) / fig_h
    if one_dim:
        _draw_sequence_field(fig.add_axes((0.4 / fig_w, top - field_h * 0.45 / fig_h, (field_w - 0.6) / fig_w, field_h * 0.45 / fig_h)), codes[0], element[0])
    else:
        width = (field_w - 0.4) / panels
        index = internal_index(element, report.event_shape)
        for c in range(panels):
            ax = fig.add_axes(((0.3 + c * width) / fig_w, top - field_h / fig_h + 0.9 / fig_h, (width - 0.25) / fig_w, (field_h - 1.2) / fig_h))
            if video:
                strip, at = frame_strip(codes[c], index[1:])
                _draw_image_field(ax, strip, (index[0], *at), c, codes.shape[0])
            else:
                _draw_image_field(ax, codes[c], element, c, codes.shape[0])
        what = " (frames left to right)" if video else ""
        order = ", ".join(o.type for o in spec.orderings) if hasattr(spec, "orderings") else "raster"
        fig.text(0.3 / fig_w, top + 0.35 / fig_h, f"receptive field of element {tuple(element)} in {order} order, channel by channel{what}",
                 fontsize=10)
    _legend(fig, codes, top - (field_h + 0.1) / fig_h)
    ax_graph = fig.add_axes(((field_w + 0.5) / fig_w, (fig_h - 0.5 - graph_h) / fig_h, graph_w / fig_w, graph_h / fig_h))
    _draw_graph(ax_graph, spec.ir, boxes, report, (min(xs) - 0.3, max(xs) + 0.3), (min(ys) - 0.6, max(ys) + 0.6))
    return fig


def draw_graph_figure(path: Path, spec: Any, report: Report, element: tuple[int, ...]) -> None:
    """Save the picture as a PNG."""
    import matplotlib.pyplot as plt
    fig = graph_figure(spec, report, element)
    fig.savefig(path)
    plt.close(fig)


def _colours(codes: np.ndarray) -> np.ndarray:
    from matplotlib.colors import to_rgb
    table = np.array([to_rgb(CATEGORY_COLOURS[k]) for k in range(len(CATEGORY_COLOURS))])
    return table[codes]


def _draw_image_field(ax: Any, codes: np.ndarray, element: tuple[int, ...], channel: int, channels: int) -> None:
    """One channel's map: which of its elements the chosen element reads."""
    ax.imshow(_colours(codes), interpolation="nearest")
    names = CHANNEL_NAMES.get(channels)
    which = f"channel {names[channel]}" if names else f"channel {channel}"
    more = f" (first {MAX_CHANNEL_PANELS} of {channels})" if channels > MAX_CHANNEL_PANELS and channel == 0 else ""
    ax.set_title(f"{which}{more}: {int(np.isin(codes, (SEEN, LEAK)).sum())} read", fontsize=9)
    if channel == element[0]:
        from matplotlib.patches import Rectangle
        ax.add_patch(Rectangle((element[2] - 0.5, element[1] - 0.5), 1, 1, fill=False, ec=CATEGORY_COLOURS[SELF], lw=2))
    ax.set_xlabel("column", fontsize=8)
    if channel == 0:
        ax.set_ylabel("row", fontsize=8)
    ax.tick_params(labelsize=7)


def _draw_sequence_field(ax: Any, codes: np.ndarray, t: int) -> None:
    """A 1-D event: a strip over absolute time steps, wide enough for every element read."""
    involved = np.nonzero(np.isin(codes, (SEEN, LEAK, BLIND)))[0]
    lo = int(min(involved.min(initial=t), t))
    hi = int(max(involved.max(initial=t), t))
    margin = max(4, (hi - lo) // 20)
    lo, hi = max(0, lo - margin), min(len(codes) - 1, hi + margin)
    ax.imshow(_colours(codes[lo:hi + 1])[None], interpolation="nearest", aspect="auto", extent=(lo - 0.5, hi + 0.5, 0, 1))
    ax.axvline(t, color=CATEGORY_COLOURS[SELF], lw=2)
    ax.set_yticks([])
    ax.set_xlabel("time step (absolute)", fontsize=9)
    ax.set_title(f"receptive field of t={t}: {int(np.isin(codes, (SEEN, LEAK)).sum())} steps read", fontsize=9)
    ax.tick_params(labelsize=7)


def _legend(fig: Any, codes: np.ndarray, bottom: float) -> None:
    from matplotlib.patches import Patch
    present = [k for k in (SELF, SEEN, LEAK, BLIND, EARLIER, LATER) if (codes == k).any()]
    fig.legend(handles=[Patch(color=CATEGORY_COLOURS[k], label=CATEGORY_NAMES[k]) for k in present],
               loc="upper left", bbox_to_anchor=(0.01, bottom), ncol=3, fontsize=8, frameon=False)


def _draw_graph(ax: Any, ir: Any, boxes: dict[str, NodeBox], report: Report, xlim: tuple[float, float], ylim: tuple[float, float]) -> None:
    """Nodes as labelled boxes, edges as arrows (residual edges dashed); a leak's route in orange
    and its culprit edge and node in red."""
    leak = report.leaks[0] if report.leaks else None
    chain = list(leak["route"]) if leak else []
    if chain and ir.output != chain[0]:
        chain = [i for i in ir.node(chain[0]).all_inputs if ir.node(i).kind == "data"][:1] + chain
    route = set(chain)
    route_edges = set(zip(chain, chain[1:]))
    for node in ir:
        for source in node.all_inputs:
            edge = (source, node.name)
            culprit = leak is not None and node.name == leak["culprit"] and source == leak["via"]
            colour, width = ("#dc322f", 2.2) if culprit else ("#cb4b16", 1.4) if edge in route_edges else ("#657b83", 0.7)
            ax.annotate("", xy=(boxes[node.name].x, boxes[node.name].y), xytext=(boxes[source].x, boxes[source].y),
                        arrowprops={"arrowstyle": "-|>", "color": colour, "lw": width, "shrinkA": 11, "shrinkB": 11,
                                    "linestyle": "--" if source == node.residual else "-"})
    for node in ir:
        box = boxes[node.name]
        is_culprit = leak is not None and node.name == leak["culprit"]
        edge = "#dc322f" if is_culprit else "#cb4b16" if node.name in route else "#586e75"
        ax.text(box.x, box.y, box.label, ha="center", va="center", fontsize=FONT_POINTS, family="DejaVu Sans Mono",
                bbox={"boxstyle": "round,pad=0.3", "fc": KIND_COLOURS[node.kind], "ec": edge, "lw": 2.0 if is_culprit else 0.8})
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.axis("off")
    title = f"op graph ({len(ir.op_nodes())} ops; dashed: residual)"
    if leak:
        title += f"\nleak enters at {leak['culprit']!r}" + (f" from {leak['via']!r}" if leak["via"] else "")
    ax.set_title(title, fontsize=9, loc="left")
