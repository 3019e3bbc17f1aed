"""The picture `arspec graph` draws: the receptive field of one element, channel by channel, beside
the op graph. Leaking specs are drawn too: the elements read too early and the edge that lets
them in are red."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from arspec.analysis.report import Report
from arspec.graph_layout import FONT_POINTS, GraphLayout, graph_layout
from arspec.ordering import internal_event

# categories of the receptive-field map, drawn in this order (later wins)
LATER, EARLIER, BLIND, SEEN, LEAK, SELF, GAP = range(7)
CATEGORY_COLOURS = {LATER: "#ebebeb", EARLIER: "#aaaaaa", BLIND: "#d33682", SEEN: "#2e8b57", LEAK: "#dc322f", SELF: "#268bd2",
                    GAP: "#ffffff"}
CATEGORY_NAMES = {SELF: "the element", SEEN: "read by it", LEAK: "read too early (leak)", BLIND: "blind spot",
                  EARLIER: "earlier, not read", LATER: "later"}
KIND_COLOURS = {"data": "#93c5fd", "context": "#fde68a", "op": "#a7f3d0", "folded": "#d9f5e8"}
CHANNEL_NAMES = {3: "RGB"}
MAX_CHANNEL_PANELS = 4
MAX_FRAMES_BEFORE = 4                            # a video's field: frames drawn before the element's



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


def frame_window(frames: int, t: int, before: int = MAX_FRAMES_BEFORE, after: int = 1) -> tuple[int, int]:
    """The frames [lo, hi) a video's field is drawn over: the element's frame, a few before it and
    one after (a long clip side by side would be too wide to read)."""
    return max(0, t - before), min(frames, t + after + 1)


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


def leak_route(ir: Any, report: Report) -> list[str]:
    """The IR nodes a leak travels through, from the data node to the output (empty if none)."""
    if not report.leaks:
        return []
    chain = list(report.leaks[0]["route"])
    if chain and ir.output != chain[0]:
        chain = [i for i in ir.node(chain[0]).all_inputs if ir.node(i).kind == "data"][:1] + chain
    return chain


def graph_figure(spec: Any, report: Report, element: tuple[int, ...], fold: bool = True) -> Any:
    """The whole picture as a matplotlib Figure (the caller saves or inspects it). `fold`: draw
    the middle repeats of a long repeated block as one box (a leak's repeat always stays drawn)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    leak = report.leaks[0] if report.leaks else None
    keep = set(leak_route(spec.ir, report)) | ({leak["culprit"], leak["via"]} - {None} if leak else set())
    layout = graph_layout(spec.ir, keep=keep, fold=fold)
    boxes = layout.boxes.values()
    bends = [point for route in layout.routes.values() for point in route]
    xs = [b.x - b.width / 2 for b in boxes] + [b.x + b.width / 2 for b in boxes] + [x for x, _ in bends]
    ys = [b.y for b in boxes]
    spread = max(max(xs) - min(xs), 4.0)            # room for the panel's title
    centre = (max(xs) + min(xs)) / 2
    xs = [centre - spread / 2, centre + spread / 2]
    graph_w, graph_h = spread + 0.6, max(ys) - min(ys) + 1.2
    codes = field_categories(report, element)
    one_dim = len(report.event_shape) == 1
    video = len(report.event_shape) == 4
    panels = 1 if one_dim else min(codes.shape[0], MAX_CHANNEL_PANELS)
    frames = frame_window(codes.shape[1], internal_index(element, report.event_shape)[1]) if video else (0, 0)
    field_w = 9.0 if one_dim else max(4.0, (max(3.2, 1.2 * (frames[1] - frames[0])) if video else 3.2) * panels)
    field_h = 2.6 if one_dim else 4.2
    summary = summary_lines(spec, report, element, codes, layout)
    summary_h = 0.2 * len(summary) + 0.9
    fig_w, fig_h = field_w + graph_w + 0.8, max(field_h + 1.4 + summary_h, graph_h + 1.3)
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=110)
    title = f"{spec.name}: " + ("not autoregressive" if report.leaks else "autoregressive")
    fig.text(0.3 / fig_w, 1 - 0.2 / fig_h, title, va="top", fontsize=11, color="#dc322f" if report.leaks else "black")
    top = (fig_h - 1.0) / fig_h
    if one_dim:
        _draw_sequence_field(fig.add_axes((0.4 / fig_w, top - field_h * 0.45 / fig_h, (field_w - 0.6) / fig_w, field_h * 0.45 / fig_h)), codes[0], element[0])
    else:
        width = (field_w - 0.6) / panels
        index = internal_index(element, report.event_shape)
        for c in range(panels):
            ax = fig.add_axes(((0.55 + c * width) / fig_w, top - field_h / fig_h + 0.9 / fig_h, (width - 0.25) / fig_w, (field_h - 1.2) / fig_h))
            read = int(np.isin(codes[c], (SEEN, LEAK)).sum())
            if video:
                lo, hi = frames
                strip, at = frame_strip(codes[c][lo:hi], (index[1] - lo, *index[2:]))
                _draw_image_field(ax, strip, (index[0], *at), c, codes.shape[0], read)
            else:
                _draw_image_field(ax, codes[c], element, c, codes.shape[0], read)
        what = f" (frames {frames[0]}-{frames[1] - 1} of {codes.shape[1]}, left to right)" if video else ""
        fig.text(0.3 / fig_w, top + 0.5 / fig_h, f"receptive field of element {tuple(element)}\nin {_order_name(spec)} order, channel by channel{what}",
                 fontsize=10, va="top", linespacing=1.4)
    _legend(fig, codes, top - (field_h + 0.1) / fig_h)
    fig.text(0.3 / fig_w, top - (field_h + 0.8) / fig_h, "\n".join(summary), va="top", fontsize=8.5, linespacing=1.6)
    ax_graph = fig.add_axes(((field_w + 0.5) / fig_w, (fig_h - 1.0 - graph_h) / fig_h, graph_w / fig_w, graph_h / fig_h))
    _draw_graph(ax_graph, spec.ir, layout, report, (min(xs) - 0.3, max(xs) + 0.3), (min(ys) - 0.6, max(ys) + 0.6))
    return fig


def _order_name(spec: Any) -> str:
    return ", ".join(o.type for o in spec.orderings) if hasattr(spec, "orderings") else "raster"


def _element_text(element: tuple[int, ...], report: Report) -> str:
    return f"t={element[0]}" if len(report.event_shape) == 1 else str(tuple(element))


def summary_lines(spec: Any, report: Report, element: tuple[int, ...], codes: np.ndarray, layout: GraphLayout) -> list[str]:
    """What the picture shows, in words: the model's size, its distribution and order, how much
    of the past the element reads, any blind spot, and which repeats are folded."""
    ir = spec.ir
    distribution = ir.distribution.kind.replace("_", " ")
    if ir.distribution.classes and ir.distribution.kind != "bernoulli":
        distribution += f" over {ir.distribution.classes} classes"
    read = int((codes == SEEN).sum())
    earlier = read + int(np.isin(codes, (EARLIER, BLIND)).sum())
    share = f" ({100 * read / earlier:.1f}%)" if earlier else ""
    lines = [f"{len(ir.op_nodes())} ops, {ir.parameters:,} parameters; event {list(report.event_shape)}",
             f"distribution: {distribution}; order: {_order_name(spec)}",
             f"element {_element_text(element, report)} reads {read} of the {earlier} elements before it{share}"]
    blind = int((codes == BLIND).sum())
    if blind:
        lines.append(f"blind spot: {blind} earlier elements inside the field are never read")
    leaks = int((codes == LEAK).sum())
    if leaks:
        lines.append(f"leak: it also reads {leaks} element(s) not generated before it")
    folded = [box for box in layout.boxes.values() if box.kind == "folded"]
    for box in folded:
        lines.append(f"{box.label.splitlines()[0]}: {len(box.members)} ops drawn as one box (arspec graph --unfold draws them)")
    return lines


def draw_graph_figure(path: Path, spec: Any, report: Report, element: tuple[int, ...], fold: bool = True) -> None:
    """Save the picture as a PNG."""
    import matplotlib.pyplot as plt
    fig = graph_figure(spec, report, element, fold=fold)
    fig.savefig(path)
    plt.close(fig)


def _colours(codes: np.ndarray) -> np.ndarray:
    from matplotlib.colors import to_rgb
    table = np.array([to_rgb(CATEGORY_COLOURS[k]) for k in range(len(CATEGORY_COLOURS))])
    return table[codes]


def _draw_image_field(ax: Any, codes: np.ndarray, element: tuple[int, ...], channel: int, channels: int, read: int) -> None:
    """One channel's map: which of its elements the chosen element reads."""
    ax.imshow(_colours(codes), interpolation="nearest")
    names = CHANNEL_NAMES.get(channels)
    which = f"channel {names[channel]}" if names else f"channel {channel}"
    more = f" (first {MAX_CHANNEL_PANELS} of {channels})" if channels > MAX_CHANNEL_PANELS and channel == 0 else ""
    ax.set_title(f"{which}{more}: {read} read", fontsize=9)
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


def _draw_graph(ax: Any, ir: Any, layout: GraphLayout, report: Report, xlim: tuple[float, float], ylim: tuple[float, float]) -> None:
    """Nodes as labelled boxes (folded repeats dashed), edges along their routes (residual edges
    dashed); a leak's route in orange and its culprit edge and node in red."""
    leak = report.leaks[0] if report.leaks else None
    shown = layout.shown
    chain = [shown[n] for n in leak_route(ir, report)]
    route_edges = {(a, b) for a, b in zip(chain, chain[1:]) if a != b}
    culprit = (shown[leak["via"]], shown[leak["culprit"]]) if leak and leak["via"] else None
    for (source, target), points in layout.routes.items():
        colour, width = ("#dc322f", 2.2) if (source, target) == culprit else ("#cb4b16", 1.4) if (source, target) in route_edges else ("#657b83", 0.7)
        style = "--" if (source, target) in layout.residual else "-"
        if len(points) > 2:
            ax.plot([p[0] for p in points[:-1]], [p[1] for p in points[:-1]], color=colour, lw=width, linestyle=style, zorder=1)
        ax.annotate("", xy=points[-1], xytext=points[-2],
                    arrowprops={"arrowstyle": "-|>", "color": colour, "lw": width, "linestyle": style,
                                "shrinkA": 0 if len(points) > 2 else 11, "shrinkB": 11}, zorder=1)
    on_route = set(chain)
    for name, box in layout.boxes.items():
        is_culprit = leak is not None and name == shown[leak["culprit"]]
        edge = "#dc322f" if is_culprit else "#cb4b16" if name in on_route else "#586e75"
        ax.text(box.x, box.y, box.label, ha="center", va="center", fontsize=FONT_POINTS, family="DejaVu Sans Mono", zorder=3,
                bbox={"boxstyle": "round,pad=0.3", "fc": KIND_COLOURS[box.kind], "ec": edge, "lw": 2.0 if is_culprit else 0.8,
                      "linestyle": "--" if box.kind == "folded" else "-"})
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.axis("off")
    title = f"op graph ({len(ir.op_nodes())} ops; dashed: residual)"
    if leak:
        title += f"\nleak enters at {leak['culprit']!r}" + (f" from {leak['via']!r}" if leak["via"] else "")
    ax.set_title(title, fontsize=9, loc="left")
