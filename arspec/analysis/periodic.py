"""Checks on offset tables, for any image size.

Offsets hold for every element of a *class*: a data channel and a position modulo the check
period (the lcm of the tables' fold and the ordering's period: 1 for raster, image side / base
for multiscale). Whether an offset reaches a later element is the same for every element of the
class whose source lies inside the image, so one representative per (class, offset) decides it
exactly; receptive fields and blind spots are measured on an interior representative."""
from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np


@dataclass
class OffsetTable:
    """Per data channel and phase, the offsets an element's term reads (see OffsetDeps)."""

    table: np.ndarray             # (G, fold^d, *box, Cx)
    origin: np.ndarray            # (d,)
    fold: int

    def entries(self, g: int, psi: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """(rel (d, K), channel (K,)) of class (g, psi): offsets relative to the element itself."""
        phi = np.array([p % self.fold for p in psi], dtype=int)
        flat = int(np.ravel_multi_index(tuple(phi), (self.fold,) * len(psi))) if len(psi) else 0
        *box, chan = np.nonzero(self.table[g, flat])
        rel = np.array(box, dtype=int).reshape(len(psi), -1) - self.origin[:, None] - phi[:, None]
        return rel, np.asarray(chan, dtype=int)


def classes(period: int, size: np.ndarray):
    """Every position class (modulo `period` per axis) that occurs in the image."""
    yield from product(*[range(min(period, int(s))) for s in size])


def leaks(tab: OffsetTable, order: np.ndarray, period: int) -> tuple[list[tuple[int, int]], int]:
    """(target, source) flat pairs reading an element of the same or a later step (a few per
    class), and how many elements are affected."""
    groups, size = order.shape[0], np.array(order.shape[1:])
    pairs: list[tuple[int, int]] = []
    affected = 0
    for g in range(groups):
        for psi in classes(period, size):
            rel, chan = tab.entries(g, psi)
            if not len(chan):
                continue
            start = np.array(psi)[:, None]
            need = np.maximum(0, -rel - start)
            p = start + period * (-(-need // period))                 # first element of the class with p + rel >= 0
            q = p + rel
            valid = np.all(p < size[:, None], axis=0) & np.all(q < size[:, None], axis=0)
            if not valid.any():
                continue
            later = np.zeros_like(valid)
            later[valid] = order[(chan[valid], *q[:, valid])] >= order[(np.full(valid.sum(), g), *p[:, valid])]
            if not later.any():
                continue
            hits = np.nonzero(later)[0]
            # the nearest leaks first (reading oneself last): they point at the layer that opens them
            nearest = hits[np.lexsort((np.abs(rel[:, hits]).sum(axis=0), ~np.any(rel[:, hits] != 0, axis=0) & (chan[hits] == g)))]
            for i in nearest[:2]:
                pairs.append((int(np.ravel_multi_index((g, *p[:, i]), order.shape)), int(np.ravel_multi_index((chan[i], *q[:, i]), order.shape))))
            affected += _class_affected(rel[:, hits], np.array(psi), period, size)
    return pairs, affected


def _class_affected(rel: np.ndarray, psi: np.ndarray, period: int, size: np.ndarray) -> int:
    """Elements of class psi for which at least one of the offsets `rel` lies inside the image."""
    counts = [len(range(int(a), int(s), period)) for a, s in zip(psi, size)]
    hit = np.zeros(counts, dtype=bool)
    for r in rel.T:
        sl = []
        for a, s, n, d in zip(psi, size, counts, r):
            # positions p = a + period*k with 0 <= p + d < s
            lo = max(0, -(-(-d - a) // period)) if -d - a > 0 else 0
            hi = min(n, (s - 1 - d - a) // period + 1) if s - 1 - d - a >= 0 else 0
            sl.append(slice(lo, max(lo, hi)))
        hit[tuple(sl)] = True
    return int(hit.sum())


def interior(psi: tuple[int, ...], period: int, size: np.ndarray) -> np.ndarray:
    """The element of class psi nearest the image's centre."""
    p = [a + period * max(0, (int(s) // 2 - a) // period) for a, s in zip(psi, size)]
    return np.array([min(v, a + period * ((int(s) - 1 - a) // period)) for v, a, s in zip(p, psi, size)], dtype=int)


@dataclass
class Field:
    """What one element sees: how many elements, their extent around it, how many earlier
    elements inside that extent it misses (its blind spot), and whether any earlier element exists."""

    seen: int
    extent: tuple[list[int], list[int]]
    blind: int
    has_past: bool


def field(rel: np.ndarray, chan: np.ndarray, g: int, p: np.ndarray, order: np.ndarray, video: bool = False) -> Field:
    """The receptive field of element (g, p); with `video` its blind spot is measured within its
    own frame (the leading spatial axis), as for the concrete domain."""
    size = np.array(order.shape[1:])
    q = p[:, None] + rel
    inside = np.all((q >= 0) & (q < size[:, None]), axis=0)
    q, chan = q[:, inside], chan[inside]
    mine = order[(g, *p)]
    has_past = bool((order < mine).any())
    if not len(chan):
        return Field(0, ([0] * len(p), [0] * len(p)), 0, has_past)
    lo, hi = np.minimum(q.min(axis=1), p), np.maximum(q.max(axis=1), p)
    if video:       # the box within p's own frame (the leading spatial axis)
        same = q[0] == p[0]
        blind = _unseen_earlier(q[1:, same], chan[same], p[1:], order[:, int(p[0])], mine)
    else:
        blind = _unseen_earlier(q, chan, p, order, mine)
    seen = np.unique(np.concatenate([chan[None], q]), axis=1).shape[1]        # distinct (row, position) pairs
    return Field(int(seen), ((lo - p).tolist(), (hi - p).tolist()), blind, has_past)


def symmetric_rows(lo: np.ndarray, hi: np.ndarray, p: np.ndarray, last: np.ndarray, seen: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The box of a field widened, along the last axis of an image, to reach as far to the right
    of the element as the rows above it reach to its left (and the other way), when one side
    reaches at least twice as far as the other: the pixels up and to the right that a recurrence
    from the left and above never sees (a Spatial LSTM's) count like PixelCNN's triangle, a gated
    stack's field one column narrower on one side does not. `seen`: the seen positions (d, n).
    Sequences keep their box."""
    if len(p) < 2 or seen is None or not seen.shape[1]:
        return lo, hi
    above = seen[:, seen[-2] < p[-2]]
    if not above.shape[1]:
        return lo, hi
    left, right = int(p[-1] - above[-1].min()), int(above[-1].max() - p[-1])
    if max(left, right) < 2 * max(1, min(left, right)):
        return lo, hi                                  # about as far both ways: the field's own shape
    reach = max(left, right)
    lo, hi = lo.copy(), hi.copy()
    lo[-1], hi[-1] = min(int(lo[-1]), max(0, int(p[-1]) - reach)), max(int(hi[-1]), min(int(last[-1]), int(p[-1]) + reach))
    return lo, hi


def _unseen_earlier(q: np.ndarray, chan: np.ndarray, p: np.ndarray, order: np.ndarray, mine: int) -> int:
    """How many elements earlier than step `mine`, inside the box spanned by the seen positions q
    (with their rows `chan`) and p itself, are not seen."""
    lo = np.minimum(q.min(axis=1), p) if len(chan) else p
    hi = np.maximum(q.max(axis=1), p) if len(chan) else p
    lo, hi = symmetric_rows(lo, hi, p, np.array(order.shape[1:]) - 1, q if len(chan) else None)
    box = (slice(None),) + tuple(slice(int(a), int(b) + 1) for a, b in zip(lo, hi))
    seen = np.zeros((order.shape[0],) + tuple(int(b - a + 1) for a, b in zip(lo, hi)), dtype=bool)
    seen[(chan, *(q - lo[:, None]))] = True          # (q lies inside: the widened box holds the seen box)
    return int(((order[box] < mine) & ~seen).sum())
