"""The generation order of an event: the step at which each element is drawn. An element may read
only elements of earlier steps (elements that share a step may not read each other)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


class OrderError(ValueError):
    """An order that does not fit the event."""


def event_steps(order: str, shape: tuple[int, ...]) -> np.ndarray:
    """Per element of an event of `shape`, its step. `raster`: the flat index of the event as its
    axes are written; `channels-last` and `rgb`: for an event [C, *S], positions in raster order and
    the channels of a position in index order (R -> G -> B); a .npy file: an array of the event's
    shape holding each element's step, or a permutation of the flat indices (order[k] is the
    element drawn k-th)."""
    size = int(np.prod(shape))
    if order == "raster":
        return np.arange(size).reshape(shape)
    if order in ("channels-last", "rgb"):
        if len(shape) < 2:
            raise OrderError(f"--order {order} needs an event [C, ...] with a channel axis first, the event is {list(shape)}")
        c, positions = shape[0], int(np.prod(shape[1:]))
        return (np.arange(positions)[None, :] * c + np.arange(c)[:, None]).reshape(shape)
    path = Path(order)
    if path.suffix != ".npy":
        raise OrderError(f"--order: expected raster, channels-last, rgb or a .npy file, got {order!r}")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise OrderError(f"--order {order}: not a readable .npy array ({err})") from None
    if array.dtype.kind not in "iu":
        raise OrderError(f"--order {order}: expected integers, got {array.dtype}")
    if array.shape == tuple(shape):
        return array.astype(np.int64)
    if array.shape == (size,) and np.array_equal(np.sort(array), np.arange(size)):
        steps = np.empty(size, dtype=np.int64)
        steps[array] = np.arange(size)
        return steps.reshape(shape)
    raise OrderError(f"--order {order}: expected the steps of every element (shape {list(shape)}) or a permutation of "
                     f"{size} flat indices, got an array of shape {list(array.shape)}")
