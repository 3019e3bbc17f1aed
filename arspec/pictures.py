"""Pictures: sample grids, per-element heat maps, receptive-field maps and the op graph."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

SEEN, BLIND, FUTURE, SELF, UNSEEN_PAST = (46, 139, 87), (220, 50, 47), (235, 235, 235), (38, 139, 210), (170, 170, 170)


def to_uint8_images(x: np.ndarray, classes: int | None) -> np.ndarray:
    """(N, C, H, W) class indices or reals -> (N, H, W, 3) uint8."""
    x = x.astype(np.float64)
    if classes is not None:
        x = x / max(1, classes - 1)
    else:
        lo, hi = x.min(), x.max()
        x = (x - lo) / (hi - lo + 1e-12)
    img = np.clip(x * 255, 0, 255).astype(np.uint8)
    if img.shape[1] == 1:
        img = np.repeat(img, 3, axis=1)
    return np.moveaxis(img[:, :3], 1, -1)


def grid(images: np.ndarray, scale: int = 4, pad: int = 2) -> Image.Image:
    """Tile (N, H, W, 3) uint8 images into one picture, upscaled by `scale`."""
    n, h, w, _ = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    canvas = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 128, dtype=np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        canvas[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = im
    return Image.fromarray(canvas).resize((canvas.shape[1] * scale, canvas.shape[0] * scale), Image.NEAREST)


def heat(values: np.ndarray) -> np.ndarray:
    """(N, H, W) non-negative -> (N, H, W, 3) uint8 with a perceptual colour map."""
    import matplotlib
    cmap = matplotlib.colormaps["viridis"]
    v = values / (values.max() + 1e-12)
    return (cmap(v)[..., :3] * 255).astype(np.uint8)


def save_grid(path: Path, images: np.ndarray, scale: int = 4) -> None:
    grid(images, scale).save(path)


def receptive_field_map(report, spec, element: tuple[int, ...]) -> np.ndarray:
    """(H, W, 3) picture for an image element: seen, blind spot, future, the element itself."""
    event = (1, spec.event.shape[0]) if len(spec.event.shape) == 1 else tuple(spec.event.shape)
    flat = int(np.ravel_multi_index(element, event))
    seen = np.zeros(int(np.prod(event)), dtype=bool)
    seen[list(report.dependency_set(flat))] = True
    order = report.order.reshape(-1)
    past = order < order[flat]
    seen_img = seen.reshape(event).any(axis=0)
    past_img = past.reshape(event).all(axis=0) | past.reshape(event).any(axis=0)
    coords = np.argwhere(seen_img)
    blind = np.zeros_like(seen_img)
    if len(coords):
        pts = np.concatenate([coords, np.array([element[1:]])])
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        box = np.zeros_like(seen_img)
        box[tuple(slice(a, b + 1) for a, b in zip(lo, hi))] = True
        blind = box & past_img & ~seen_img
    img = np.zeros(seen_img.shape + (3,), dtype=np.uint8)
    img[...] = FUTURE
    img[past_img] = UNSEEN_PAST
    img[blind] = BLIND
    img[seen_img] = SEEN
    img[tuple(element[1:])] = SELF
    if img.ndim == 2 or len(seen_img.shape) == 1:
        img = img.reshape(1, -1, 3)
    return img


def draw_graph_figure(path: Path, spec, report, element: tuple[int, ...]) -> None:
    """Receptive field (left) and op graph (right) in one PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import networkx as nx
    from matplotlib.patches import Patch

    ir = spec.ir
    fig, (ax_rf, ax_g) = plt.subplots(1, 2, figsize=(14, 7), dpi=110, gridspec_kw={"width_ratios": [1, 1.4]})
    rf = receptive_field_map(report, spec, element)
    if rf.shape[0] == 1:   # a sequence: show the window around the element
        t = element[-1]
        lo = max(0, t - 96)
        rf = np.repeat(rf[:, lo:t + 8], 8, axis=0)
        ax_rf.set_xlabel(f"time steps {lo}..{t + 7}")
    ax_rf.imshow(rf, interpolation="nearest")
    ax_rf.set_title(f"receptive field of element {element}")
    ax_rf.legend(handles=[Patch(color=np.array(c) / 255, label=text) for c, text in
                          [(SELF, "element"), (SEEN, "seen"), (BLIND, "blind spot"), (UNSEEN_PAST, "earlier, outside field"), (FUTURE, "later")]],
                 loc="upper center", bbox_to_anchor=(0.5, -0.06), ncol=3, fontsize=8)
    g = nx.DiGraph()
    for n in ir:
        g.add_node(n.name)
        for i in n.all_inputs:
            g.add_edge(i, n.name)
    depth: dict[str, int] = {}
    for n in nx.topological_sort(g):
        depth[n] = 1 + max((depth[p] for p in g.predecessors(n)), default=-1)
    layers: dict[int, list[str]] = {}
    for n, d in depth.items():
        layers.setdefault(d, []).append(n)
    pos = {n: (i - (len(ns) - 1) / 2, -d) for d, ns in layers.items() for i, n in enumerate(ns)}
    colors = ["#268bd2" if ir.node(n).kind == "data" else "#b58900" if ir.node(n).kind != "op" else "#2aa198" for n in g]
    nx.draw_networkx(g, pos, ax=ax_g, node_color=colors, node_size=120, font_size=6, arrowsize=6, width=0.6)
    ax_g.set_title(f"op graph of {spec.name} ({len(ir.op_nodes())} ops)")
    ax_g.axis("off")
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
