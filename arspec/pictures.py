"""Pictures of samples: image grids, per-element heat maps with colour bars, and videos as strips of
frames (PNG) or animations (GIF)."""
from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


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


def grid(images: np.ndarray, scale: int = 4, pad: int = 2, cols: int | None = None) -> Image.Image:
    """Tile (N, H, W, 3) uint8 images into one picture (`cols` per row; default about square),
    upscaled by `scale`."""
    n, h, w, _ = images.shape
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    canvas = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 128, dtype=np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        canvas[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = im
    return Image.fromarray(canvas).resize((canvas.shape[1] * scale, canvas.shape[0] * scale), Image.NEAREST)


def save_heat_grid(path: Path, values: np.ndarray, title: str, label: str) -> None:
    """(N, H, W) values tiled as a grid with a colour map, a colour bar naming the quantity and
    its unit, and a title."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n, h, w = values.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    canvas = np.full((rows * (h + 1) + 1, cols * (w + 1) + 1), np.nan)
    for i, v in enumerate(values):
        r, c = divmod(i, cols)
        canvas[1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + c * (w + 1): 1 + c * (w + 1) + w] = v
    fig, ax = plt.subplots(figsize=(6.4, 5.6), dpi=110)
    cmap = matplotlib.colormaps["viridis"].copy()
    cmap.set_bad("#808080")
    shown = ax.imshow(canvas, cmap=cmap, interpolation="nearest")
    ax.axis("off")
    ax.set_title(title, fontsize=10)
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04).set_label(label)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def save_grid(path: Path, images: np.ndarray, scale: int = 4, cols: int | None = None) -> None:
    grid(images, scale, cols=cols).save(path)


def video_strips(videos: np.ndarray, classes: int | None, scale: int = 3, pad: int = 2) -> Image.Image:
    """(N, T, C, H, W) videos as one picture: a row per video, its frames left to right."""
    n, t, c, h, w = videos.shape
    frames = to_uint8_images(videos.reshape(n * t, c, h, w), classes).reshape(n, t, h, w, 3)
    canvas = np.full((n * (h + pad) + pad, t * (w + pad) + pad, 3), 128, dtype=np.uint8)
    for i in range(n):
        for j in range(t):
            top, left = pad + i * (h + pad), pad + j * (w + pad)
            canvas[top:top + h, left:left + w] = frames[i, j]
    return Image.fromarray(canvas).resize((canvas.shape[1] * scale, canvas.shape[0] * scale), Image.NEAREST)


def save_video_gif(path: Path, videos: np.ndarray, classes: int | None, scale: int = 4, frame_ms: int = 200) -> None:
    """(N, T, C, H, W) videos as one looping animated GIF: the videos side by side in a grid, one
    GIF frame per video frame."""
    n, t, c, h, w = videos.shape
    frames = to_uint8_images(videos.transpose(1, 0, 2, 3, 4).reshape(t * n, c, h, w), classes).reshape(t, n, h, w, 3)
    pictures = [grid(frames[j], scale) for j in range(t)]
    pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=frame_ms, loop=0)


def save_spectrograms(path: Path, clips: list[tuple[str, np.ndarray]], rate: int, n_fft: int = 512) -> None:
    """Log-power spectrograms of audio clips, one panel each, titled, with time and frequency axes."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(clips), 1, figsize=(8, 2.4 * len(clips)), dpi=110, squeeze=False)
    hop = n_fft // 4
    window = np.hanning(n_fft)
    for ax, (title, audio) in zip(axes[:, 0], clips):
        audio = np.asarray(audio, dtype=np.float64)
        frames = max(1, 1 + (len(audio) - n_fft) // hop)
        index = np.arange(frames)[:, None] * hop + np.arange(n_fft)[None]
        padded = np.pad(audio, (0, max(0, index.max() + 1 - len(audio))))
        power = np.abs(np.fft.rfft(padded[index] * window, axis=1)) ** 2
        shown = ax.imshow(10 * np.log10(power.T + 1e-10), origin="lower", aspect="auto", cmap="magma",
                          extent=(0, len(audio) / rate, 0, rate / 2000), vmin=-100, vmax=20)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("kHz")
        fig.colorbar(shown, ax=ax, fraction=0.03, pad=0.01).set_label("dB")
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def save_sample_sheet(path: Path, images: np.ndarray, title: str, labels: list[str] | None = None,
                      min_width: int = 640, cols: int | None = None) -> None:
    """(N, H, W, 3) uint8 images as a titled sheet at least `min_width` pixels wide (upscaled by
    nearest neighbour, however small the event), each image with its label below it (its NLL)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n, h, w, _ = images.shape
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    dpi = 100
    width = max(min_width, cols * w * 4) / dpi
    cell = width / cols
    fig, axes = plt.subplots(rows, cols, figsize=(width, cell * rows * h / w + 0.6 + (0.25 * rows if labels else 0)), dpi=dpi,
                             squeeze=False)
    for i, ax in used_panels(axes, n):
        ax.imshow(images[i], interpolation="nearest")
        if labels:
            ax.set_xlabel(labels[i], fontsize=7, labelpad=2)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path)
    plt.close(fig)


def used_panels(axes: Any, n: int) -> Iterator[tuple[int, Any]]:
    """The first n panels of a matplotlib grid of axes, (index, axes), ticks off; the rest blanked."""
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i < n:
            yield i, ax
        else:
            ax.axis("off")


def dim_unknown(image: np.ndarray, known: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 with the elements not given (known False: (H, W)) dimmed and tinted, and an
    outline where the known region ends: what a completion was given."""
    out = image.astype(np.float64)
    out[~known] = out[~known] * 0.25 + np.array([40.0, 40.0, 90.0])
    edge = known & ~np.pad(known, 1, constant_values=False)[2:, 1:-1] | known & ~np.pad(known, 1, constant_values=False)[1:-1, 2:]
    out[edge] = [255.0, 200.0, 0.0]
    return np.clip(out, 0, 255).astype(np.uint8)
