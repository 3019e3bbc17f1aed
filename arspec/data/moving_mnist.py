"""Moving MNIST (Srivastava et al. 2015), generated from the bundled MNIST digits: `digits` digits
bounce inside a square canvas, each starting at a uniformly random place with a uniformly random
direction and a fixed speed, reflected at the walls; frames are the pixelwise maximum of the
digits. The standard set is 20 frames of 64×64 with two 28×28 digits; a smaller canvas scales the
digits and the speed with it (32×32: 14×14 digits).

Deterministic per seed, and each split draws its digits from the matching split of the source:
binary events (Bernoulli) use the standard binarized MNIST (50,000 / 10,000 / 10,000 digits),
multi-level events the 8-bit 5,000-digit sample (4,000 / 500 / 500), quantized to the spec's
levels. Frame count and canvas size come from the spec's event [T, 1, S, S] unless the options
say otherwise; `moving-mnist:` takes options `frames=T,size=S,train=N,test=N,digits=K,seed=S`
(validation has as many items as test)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from arspec.data.splits import DataError, Splits

STANDARD_CANVAS, STANDARD_DIGIT = 64, 28
STEP = 0.1                    # the standard generator: a tenth of the free range per frame
ELEMENT_BUDGET = 16_000_000   # default training items: about this many elements in all
OPTIONS = ("frames", "size", "train", "test", "digits", "seed")


def parse_options(name: str) -> dict[str, int]:
    """`moving-mnist` or `moving-mnist:train=2000,digits=2` -> the options given."""
    if name == "moving-mnist":
        return {}
    out = {}
    for part in name.split(":", 1)[1].split(","):
        key, _, value = part.partition("=")
        if key not in OPTIONS or not value.isdigit():
            raise DataError(f"{name}: options are {', '.join(o + '=N' for o in OPTIONS)}, got {part!r}")
        out[key] = int(value)
    return out


def digit_images(binary: bool) -> list[np.ndarray]:
    """The source digits of each split as (N, 28, 28) float arrays in [0, 1]."""
    from arspec.data.files import split_indices
    from arspec.data.registry import binarized_mnist, mnist_subset
    if binary:
        return [d[:, 0].numpy().astype(np.float32) for d in binarized_mnist()]
    x, _ = mnist_subset()
    return [x[idx, 0].astype(np.float32) / 255.0 for idx in split_indices(len(x))]


def resized(digits: np.ndarray, side: int) -> np.ndarray:
    """Digits scaled to side × side (bilinear), values kept in [0, 1]."""
    if side == digits.shape[-1]:
        return digits
    return np.stack([np.asarray(Image.fromarray(d).resize((side, side), Image.BILINEAR)) for d in digits]).clip(0, 1)


def trajectories(rng: np.random.Generator, items: int, digits: int, frames: int, free: int) -> np.ndarray:
    """(items, digits, frames, 2) top-left corners, reflected at 0 and `free`."""
    angle = rng.uniform(0, 2 * np.pi, (items, digits))
    velocity = np.stack([np.sin(angle), np.cos(angle)], axis=-1) * STEP * free
    pos = rng.uniform(0, free, (items, digits, 2))
    out = np.empty((items, digits, frames, 2))
    for t in range(frames):
        out[:, :, t] = pos
        pos = pos + velocity
        for _ in range(2):                      # reflect, both walls
            low, high = pos < 0, pos > free
            pos = np.where(low, -pos, np.where(high, 2 * free - pos, pos))
            velocity = np.where(low | high, -velocity, velocity)
    return np.rint(out).astype(np.int64)


def sequences(source: np.ndarray, items: int, frames: int, canvas: int, side: int, digits: int,
              rng: np.random.Generator) -> np.ndarray:
    """(items, frames, canvas, canvas) float videos in [0, 1], digits scaled to side × side."""
    free = canvas - side
    picks = rng.integers(0, len(source), (items, digits))
    used, picks = np.unique(picks, return_inverse=True)
    source, picks = resized(source[used], side), picks.reshape(items, digits)
    corners = trajectories(rng, items, digits, frames, free)
    out = np.zeros((items, frames, canvas, canvas), dtype=np.float32)
    for i in range(items):
        for k in range(digits):
            digit = source[picks[i, k]]
            for t in range(frames):
                y, x = corners[i, k, t]
                window = out[i, t, y:y + side, x:x + side]
                np.maximum(window, digit, out=window)
    return out


def moving_mnist(name: str, spec: Any) -> Splits:
    """The Moving MNIST splits that fit the spec's event [T, 1, S, S]."""
    options = parse_options(name)
    shape = tuple(spec.event.shape)
    if len(shape) != 4 or shape[1] != 1 or shape[2] != shape[3]:
        raise DataError(f"{name}: Moving MNIST is a video of square grey frames [T, 1, S, S]; the spec's event is {list(shape)}")
    frames, canvas = options.get("frames", shape[0]), options.get("size", shape[2])
    if not 1 <= frames <= 10_000 or not 1 <= canvas <= 4096:
        raise DataError(f"{name}: frames must lie in 1..10000 and size in 1..4096, got {frames} and {canvas}")
    side = max(4, round(STANDARD_DIGIT * canvas / STANDARD_CANVAS))
    if side >= canvas:
        raise DataError(f"{name}: a {canvas}x{canvas} canvas is too small for moving digits (at least 8)")
    dist = spec.distribution
    binary = dist.type == "bernoulli"
    levels = 2 if binary else getattr(dist, "classes", None)
    if levels is None:
        raise DataError(f"{name}: Moving MNIST has discrete pixel values; the spec's distribution is {dist.type}")
    elements = frames * canvas * canvas          # a different frame count or size than the event's is reported by the fit check
    train = options.get("train", max(64, min(10_000, ELEMENT_BUDGET // elements)))
    test = options.get("test", max(16, train // 10))
    digits, seed = options.get("digits", 2), options.get("seed", 0)
    if not 1 <= digits <= 10:
        raise DataError(f"{name}: digits must lie in 1..10, got {digits}")
    if (train + 2 * test) * elements > 400_000_000:
        raise DataError(f"{name}: {train + 2 * test:,} videos of {elements:,} elements is more than this machine should hold; ask for fewer")
    sources = digit_images(binary)
    parts = []
    for index, count in enumerate((train, test, test)):          # train, validation, test
        rng = np.random.default_rng([seed, index])
        video = sequences(sources[index], count, frames, canvas, side, digits, rng)
        values = (video >= 0.5) if binary else np.rint(video * (levels - 1))
        parts.append(torch.as_tensor(values.astype(np.int64)[:, :, None]))
    return Splits(*parts, name)
