"""Orderings: the generation step of every element of an event (elements sharing a step are
generated together, as in multiscale models)."""
from __future__ import annotations

from typing import Any

import numpy as np

OBSERVED = "observed"     # the graph input of order-agnostic models: 1 where an element is given


class OrderingError(ValueError):
    """An ordering that does not fit the event."""


def internal_event(shape: list[int] | tuple[int, ...]) -> tuple[int, ...]:
    """The (channels, *spatial) shape used inside: a sequence [T] becomes (1, T), a video
    [T, C, H, W] becomes (C, T, H, W) — time the leading spatial axis, so raster order over the
    spatial axes is time-major (frame by frame, each frame row-major, channels within a pixel)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 1:
        return (1, shape[0])
    if len(shape) == 4:
        return (shape[1], shape[0], shape[2], shape[3])
    return shape


def to_user_layout(array: np.ndarray, event: tuple[int, ...] | list[int]) -> np.ndarray:
    """An array over the internal event (flat or shaped) laid out as the spec writes the event."""
    internal = internal_event(event)
    shaped = np.asarray(array).reshape(internal)
    return shaped.transpose(1, 0, 2, 3) if len(event) == 4 else shaped.reshape(tuple(event))


def compute_raster(event: tuple[int, ...]) -> np.ndarray:
    """The raster order's steps: positions row-major, channels in order within a position."""
    c, spatial = event[0], event[1:]
    pos = np.arange(int(np.prod(spatial)))
    return (pos[None, :] * c + np.arange(c)[:, None]).reshape(-1)


def compute_order(ordering: Any, event: tuple[int, ...]) -> np.ndarray:
    """Flat (C order over the internal event) array of steps, starting at 0."""
    n = int(np.prod(event))
    kind = ordering.type
    if kind == "raster":
        return compute_raster(event)
    if kind == "permutation":
        perm = np.asarray(ordering.order, dtype=np.int64)
        if perm.shape != (n,) or not np.array_equal(np.sort(perm), np.arange(n)):
            raise OrderingError(f"order must be a permutation of 0..{n - 1} ({n} entries), got {len(ordering.order)} entries")
        order = np.empty(n, dtype=np.int64)
        order[perm] = np.arange(n)
        return order
    if kind == "random":
        perm = np.random.default_rng(ordering.seed).permutation(n)
        order = np.empty(n, dtype=np.int64)
        order[perm] = np.arange(n)
        return order
    if kind == "multiscale":
        return _multiscale(ordering.base, event)
    if kind == "frames":
        if len(event) != 4:
            raise OrderingError("the frames ordering needs a video event [T, C, H, W]")
        return np.broadcast_to(np.arange(event[1])[None, :, None, None], event).reshape(-1).copy()
    if kind == "agnostic":
        # one step for every element: the network must not read x at all, except through the
        # observe gates, which reveal only elements that are given (observed) already
        return np.zeros(n, dtype=np.int64)
    raise OrderingError(f"unknown ordering {kind!r}")


def order_period(ordering: Any, event: tuple[int, ...]) -> int | None:
    """The period (in positions, per axis) under which comparing two elements' steps depends only
    on their relative offset and their positions modulo it; None when there is none."""
    if ordering.type in ("raster", "agnostic", "frames"):
        return 1
    if ordering.type == "multiscale":
        return event[1] // ordering.base
    return None


def _multiscale(base: int, event: tuple[int, ...]) -> np.ndarray:
    if len(event) != 3:
        raise OrderingError("multiscale ordering needs an image event [C, H, W]")
    c, h, w = event
    if h != w or h % base or not _power_of_two(h // base):
        raise OrderingError(f"multiscale ordering needs a square image of side base * 2^k, got {h}x{w} with base {base}")
    order = np.full((c, h, w), -1, dtype=np.int64)
    stride = h // base
    ii, jj = np.meshgrid(np.arange(base), np.arange(base), indexing="ij")
    raster = (ii * base + jj).reshape(-1)
    for ch in range(c):
        order[ch, ::stride, ::stride] = (raster * c + ch).reshape(base, base)
    step = base * base * c
    while stride > 1:
        half = stride // 2
        for di, dj in ((0, half), (half, 0), (half, half)):
            order[:, di::stride, dj::stride] = step
            step += 1
        stride = half
    return order.reshape(-1)


def _power_of_two(n: int) -> bool:
    return n >= 1 and (n & (n - 1)) == 0
