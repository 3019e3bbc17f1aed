"""`OffsetDeps`: for each relative offset, which data channels it reads. Convolution stacks are
translation-equivariant, so this is exact for any image size (borders only remove dependencies)
and its cost does not grow with the image. Strided and resolution-changing ops keep it exact: a
coarser tensor anchors its offsets on a coarser grid, and one that is periodic (after
depth_to_space) is kept polyphase, one row per phase."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product

import numpy as np

from arspec.domains.base import Deps, NotTranslationEquivariant, reduce_connectivity, unique_rows
from arspec.domains.pattern import AttentionPattern


@dataclass
class OffsetDeps(Deps):
    """rows: (R, *box, Cx); entry [r, *b, c] is true when the tensor value reads data channel c at
    event position anchor + (b - origin).

    A tensor on a grid of `stride` event positions per step is translation-equivariant under
    shifts of one step; after `depth_to_space` it is only equivariant under shifts of `fold` steps
    of its own grid. Then it is kept *polyphase*: channel j of the tensor at phase φ (its position
    mod fold, per axis) is the row of channel j*fold^d + φ, and anchors sit on a coarse grid of
    `stride` event positions per step (the tensor's own stride times fold). Rearrangements between
    resolutions are then exact channel permutations, for any image size."""

    origin: tuple[int, ...]
    stride: int = 1
    fold: int = 1
    limits: tuple[int, ...] = ()      # the event's spatial size: offsets at least this long never happen

    def _new(self, rows: np.ndarray, chan: np.ndarray, origin: tuple[int, ...], stride: int | None = None,
             fold: int | None = None) -> OffsetDeps:
        return OffsetDeps(rows, chan, tuple(origin), self.stride if stride is None else stride, self.fold if fold is None else fold,
                          self.limits)

    def _like(self, rows: np.ndarray, chan: np.ndarray) -> OffsetDeps:
        return self._new(rows, chan, self.origin)

    @staticmethod
    def data(event: tuple[int, ...]) -> OffsetDeps:
        nd = len(event) - 1
        cx = event[0]
        rows = np.zeros((cx,) + (1,) * nd + (cx,), dtype=bool)
        for c in range(cx):
            rows[(c,) + (0,) * nd + (c,)] = True
        return OffsetDeps(rows, np.arange(cx), (0,) * nd, limits=tuple(event[1:]))

    @property
    def nd(self) -> int:
        return self.rows.ndim - 2

    @property
    def phases(self) -> int:
        return self.fold ** self.nd

    @property
    def channels(self) -> int:
        return int(self.chan.shape[0]) // self.phases

    def select(self, channels: Sequence[int] | np.ndarray) -> OffsetDeps:
        """Tensor channels; with a fold, every phase of each."""
        idx = np.asarray(channels, dtype=int)
        return Deps.select(self, (idx[:, None] * self.phases + np.arange(self.phases)[None, :]).reshape(-1))

    def _polyphase_select(self, index: np.ndarray) -> OffsetDeps:
        return Deps.select(self, index)

    def is_empty(self) -> bool:
        return not self.rows.any()

    def empty(self, channels: int, spatial: tuple[int, ...]) -> OffsetDeps:
        rows = np.zeros((1,) + (1,) * self.nd + (self.rows.shape[-1],), dtype=bool)
        return OffsetDeps(rows, np.zeros(channels, dtype=int), (0,) * self.nd, limits=self.limits)

    def _aligned(self, lo: Sequence[int], hi: Sequence[int]) -> np.ndarray:
        """This table placed in a box spanning offsets lo..hi (inclusive)."""
        shape = (self.rows.shape[0],) + tuple(h - low + 1 for low, h in zip(lo, hi)) + (self.rows.shape[-1],)
        out = np.zeros(shape, dtype=bool)
        sl = tuple(slice(-o - low, -o - low + n) for o, low, n in zip(self.origin, lo, self.rows.shape[1:-1]))
        out[(slice(None),) + sl] = self.rows
        return out

    def _bounds(self) -> tuple[list[int], list[int]]:
        lo = [-o for o in self.origin]
        hi = [low + n - 1 for low, n in zip(lo, self.rows.shape[1:-1])]
        return lo, hi

    def conv(self, conn: np.ndarray, dilation: Sequence[int], pad_before: Sequence[int],
             out_spatial: Sequence[int], stride: Sequence[int] | None = None) -> OffsetDeps:
        """out[p] reads in[p*stride + k*dilation - pad_before]: the relative offsets are the same
        for every output position, so striding only coarsens the output's grid."""
        nd = conn.ndim - 2
        steps = tuple(stride or (1,) * nd)
        if len(set(steps)) != 1:
            raise NotTranslationEquivariant("a convolution with different strides per axis")
        taps = list(product(*[range(k) for k in conn.shape[2:]]))
        moves = [tuple(t[d] * dilation[d] - pad_before[d] for d in range(nd)) for t in taps]
        if self.fold != 1:
            if steps[0] != 1:
                raise NotTranslationEquivariant("a strided convolution over a periodic tensor")
            return self._polyphase_conv(conn, taps, moves)
        return self._shift_conv(conn, [tuple(self.stride * m for m in move) for move in moves], self.stride * steps[0])

    POLYPHASE_LIMIT = 50_000_000       # connectivity entries; beyond, fall back to per-position

    def _polyphase_conv(self, conn: np.ndarray, taps: list[tuple[int, ...]], moves: list[tuple[int, ...]]) -> OffsetDeps:
        """A convolution over a periodic tensor: output phase φ reads input phase (φ + m) mod fold
        at coarse step floor((φ + m) / fold) for each tap move m — one convolution on the coarse
        grid between polyphase channels."""
        nd, fold, phases = self.nd, self.fold, self.phases
        co, ci = conn.shape[:2]
        all_phases = list(product(*[range(fold)] * nd))
        plan = []                                     # (out phase, in phase, coarse step, tap)
        for tap, move in zip(taps, moves):
            if not conn[(slice(None), slice(None)) + tap].any():
                continue
            for fo, phase in enumerate(all_phases):
                moved = [p + m for p, m in zip(phase, move)]
                src = int(np.ravel_multi_index(tuple(v % fold for v in moved), (fold,) * nd)) if nd else 0
                plan.append((fo, src, tuple(v // fold for v in moved), tap))
        steps = sorted({p[2] for p in plan}) or [(0,) * nd]
        if co * phases * ci * phases * len(steps) > self.POLYPHASE_LIMIT:
            raise NotTranslationEquivariant("a convolution over a tensor with too many phases")
        index = {step: i for i, step in enumerate(steps)}
        poly = np.zeros((co * phases, ci * phases, len(steps)), dtype=bool)
        for fo, src, step, tap in plan:
            poly[fo::phases, src::phases, index[step]] |= conn[(slice(None), slice(None)) + tap]
        # one tap per coarse step, laid along a flat kernel axis
        flat = poly.reshape(poly.shape[:2] + (len(steps),) + (1,) * (nd - 1))
        return self._shift_conv(flat, [tuple(self.stride * v for v in step) for step in steps], self.stride, fold)

    def _shift_conv(self, conn: np.ndarray, shifts: list[tuple[int, ...]], out_stride: int, out_fold: int = 1) -> OffsetDeps:
        """Row r of output channel o is the union of input rows shifted by `shifts[tap]` (event units)
        for every (input channel, tap) that conn[o] connects."""
        nd = conn.ndim - 2
        row_conn = reduce_connectivity(conn, self.chan, self.rows.shape[0])
        patterns, out_chan = unique_rows(row_conn)
        taps = list(product(*[range(k) for k in conn.shape[2:]]))
        lo0, hi0 = self._bounds()
        lo = [lo0[d] + min(s[d] for s in shifts) for d in range(nd)]
        hi = [hi0[d] + max(s[d] for s in shifts) for d in range(nd)]
        out = np.zeros((patterns.shape[0],) + tuple(h - low + 1 for low, h in zip(lo, hi)) + (self.rows.shape[-1],), dtype=bool)
        for r, pattern in enumerate(patterns):
            for idx in zip(*np.nonzero(pattern)):
                ri, tap = idx[0], tuple(idx[1:])
                shift = shifts[taps.index(tap)]
                sl = tuple(slice(lo0[d] + shift[d] - lo[d], lo0[d] + shift[d] - lo[d] + self.rows.shape[1 + d]) for d in range(nd))
                out[(r,) + sl] |= self.rows[ri]
        moved = self._new(out, out_chan, tuple(-low for low in lo), out_stride, out_fold)._trimmed()
        # a value never reads an offset as long as the event itself: such reads are always padding
        return moved._clipped(moved.limits) if moved.limits else moved

    def _trimmed(self) -> OffsetDeps:
        """Shrink the box to the offsets actually present (keeps tables small in deep stacks)."""
        any_ = self.rows.any(axis=(0, self.rows.ndim - 1))
        if not any_.any():
            return self._new(self.rows[(slice(None),) + (slice(0, 1),) * self.nd], self.chan, (0,) * self.nd)
        sl, origin = [], []
        for d in range(self.nd):
            axes = tuple(a for a in range(self.nd) if a != d)
            present = np.nonzero(np.any(any_, axis=axes) if axes else any_)[0]
            sl.append(slice(present[0], present[-1] + 1))
            origin.append(self.origin[d] - present[0])
        return self._new(self.rows[(slice(None),) + tuple(sl)], self.chan, tuple(origin))

    def dense(self, conn: np.ndarray) -> OffsetDeps:
        raise NotTranslationEquivariant("dense layer")

    def depth_to_space(self, factor: int) -> OffsetDeps:
        """Tensor channel c*f^d + g at position q becomes channel c at f*q + g. In polyphase form
        the coarse grid stays and the fold grows by f: output phase φ' (per axis f*φ + g) reads
        input channel c*f^d + g at phase φ — a channel permutation."""
        nd, old = self.nd, self.fold
        if (self.stride // old) % factor or self.stride % old:
            raise NotTranslationEquivariant("depth_to_space finer than the event grid")
        subs, new = factor ** nd, old * factor
        out_channels = self.channels // subs
        index = []
        for c in range(out_channels):
            for phase in product(*[range(new)] * nd):
                g = int(np.ravel_multi_index(tuple(p % factor for p in phase), (factor,) * nd))
                inner = int(np.ravel_multi_index(tuple(p // factor for p in phase), (old,) * nd)) if nd else 0
                index.append((c * subs + g) * self.phases + inner)
        moved = self._polyphase_select(np.asarray(index))
        return moved._new(moved.rows, moved.chan, moved.origin, self.stride, new)

    def _refolded(self, fold: int) -> OffsetDeps:
        """The same tensor kept with a larger fold (a multiple of the current one): phase φ2 reads
        phase φ2 mod fold of the coarser table, shifted by the coarse steps it spans."""
        if fold == self.fold:
            return self
        if fold % self.fold:
            raise NotTranslationEquivariant("tensors whose periods do not divide one another")
        k, nd = fold // self.fold, self.nd
        old_phases, new_phases = self.phases, fold ** nd
        conn = np.zeros((self.channels * new_phases, self.channels * old_phases) + (k,) * nd, dtype=bool)
        for c in range(self.channels):
            for flat, phase in enumerate(product(*[range(fold)] * nd)):
                src = int(np.ravel_multi_index(tuple(p % self.fold for p in phase), (self.fold,) * nd)) if nd else 0
                tap = tuple(p // self.fold for p in phase)
                conn[(c * new_phases + flat, c * old_phases + src) + tap] = True
        shifts = [tuple(self.stride * t for t in tap) for tap in product(*[range(k)] * nd)]
        return self._shift_conv(conn, shifts, self.stride * k, fold)

    def broadcast_all(self, channels: int, spatial: tuple[int, ...]) -> OffsetDeps:
        raise NotTranslationEquivariant("global broadcast")

    def _common(self, others: Sequence[Deps]) -> list[OffsetDeps]:
        """All operands with one fold and grid (tensors without dependencies adopt it)."""
        parts = [self, *(o for o in others if isinstance(o, OffsetDeps))]
        assert len(parts) == len(others) + 1, "all operands must be offset sets"
        live = [p for p in parts if not p.is_empty()]
        if not live:
            return parts
        fold = max(p.fold for p in live)
        live_parts = [p._refolded(fold) for p in live]
        stride = live_parts[0].stride
        if any(p.stride != stride for p in live_parts):
            raise NotTranslationEquivariant("merging tensors on different grids")
        out, it = [], iter(live_parts)
        for p in parts:
            if p.is_empty():
                phases = fold ** p.nd
                out.append(OffsetDeps(p.rows[:1], np.zeros(p.channels * phases, dtype=int), p.origin, stride, fold, p.limits))
            else:
                out.append(next(it))
        return out

    def union(self, other: Deps) -> OffsetDeps:
        assert isinstance(other, OffsetDeps)
        a_, b_ = self._common([other])
        lo_a, hi_a = a_._bounds()
        lo_b, hi_b = b_._bounds()
        lo = [min(a, b) for a, b in zip(lo_a, lo_b)]
        hi = [max(a, b) for a, b in zip(hi_a, hi_b)]
        a, b = a_._aligned(lo, hi), b_._aligned(lo, hi)
        pairs = np.stack([a_.chan, b_.chan], axis=1)
        uniq, chan = np.unique(pairs, axis=0, return_inverse=True)
        return a_._new(a[uniq[:, 0]] | b[uniq[:, 1]], chan.reshape(-1), tuple(-low for low in lo))

    def concat(self, others: Sequence[Deps]) -> OffsetDeps:
        parts = self._common(others)
        bounds = [p._bounds() for p in parts]
        lo = [min(b[0][d] for b in bounds) for d in range(self.nd)]
        hi = [max(b[1][d] for b in bounds) for d in range(self.nd)]
        rows, chans, base = [], [], 0
        for p in parts:
            rows.append(p._aligned(lo, hi))
            chans.append(p.chan + base)
            base += p.rows.shape[0]
        return parts[0]._new(np.concatenate(rows), np.concatenate(chans), tuple(-low for low in lo))

    def closure(self, offsets: Sequence[tuple[int, ...]], groups: int, channels: int, limits: Sequence[int]) -> OffsetDeps:
        """The recurrence of ConcreteDeps.closure on offsets; offsets beyond `limits` (the image
        size) can never be realised and are dropped, which bounds the iteration."""
        if self.fold != 1 or self.stride != 1:
            raise NotTranslationEquivariant("a recurrence over a tensor not at the event's resolution")
        parts = [self.select(np.nonzero(np.arange(self.channels) % groups == g)[0]) for g in range(groups)]
        merged_inputs = [OffsetDeps(np.any(p.rows, axis=0, keepdims=True), np.zeros(1, dtype=int), p.origin, limits=self.limits) for p in parts]
        state = merged_inputs
        nd = self.nd
        while True:
            every = state[0]
            for s_ in state[1:]:
                every = every.union(s_)
            every = OffsetDeps(np.any(every.rows, axis=0, keepdims=True), np.zeros(1, dtype=int), every.origin, limits=self.limits)
            moved: OffsetDeps | None = None
            for off in offsets:
                conn = np.ones((1, 1) + (1,) * nd, dtype=bool)
                step = every.conv(conn, (1,) * nd, tuple(-o for o in off), ())._clipped(limits)
                moved = step if moved is None else moved.union(step)
            assert moved is not None
            nxt = [m.union(moved)._clipped(limits) for m in merged_inputs]
            if all(a.origin == b.origin and a.rows.shape == b.rows.shape and np.array_equal(a.rows, b.rows) for a, b in zip(nxt, state)):
                break
            state = nxt
        out = state[0].concat(state[1:])
        return OffsetDeps(out.rows, np.arange(channels) % groups, out.origin, limits=self.limits)

    def attend(self, keys: Deps, values: Deps, pattern: AttentionPattern, mask: int) -> OffsetDeps:
        """Attention under the raster ordering: a query reads, besides the tokens of its own
        position that its group may see, every key and value at an earlier position (inside the
        window). "Every earlier offset" is a lexicographic half-space: its sum with a set of
        offsets F is the half-space below F's lexicographic maximum, so the result is written
        directly, at any image size, without enumerating positions. At the borders it may add an
        offset no position pair realises; reported leaks are confirmed per position first."""
        assert isinstance(keys, OffsetDeps) and isinstance(values, OffsetDeps)
        if not pattern.raster:
            raise NotTranslationEquivariant("attention under an ordering other than raster")
        if pattern.stride is not None or pattern.chunk is not None:
            raise NotTranslationEquivariant("strided or block attention (patterns of flat positions)")
        if any(d.fold != 1 or d.stride != 1 for d in (self, keys, values) if not d.is_empty()):
            raise NotTranslationEquivariant("attention over a tensor not at the event's resolution")
        limits = self.limits or pattern.spatial
        groups, heads = pattern.groups, pattern.heads
        q, k, v = (_head_group_parts(d, pattern) for d in (self, keys, values))
        several_keys = [pattern.interior_count(g, limits) >= 2 for g in range(groups)]
        rows: list[OffsetDeps] = []
        for h in range(heads):
            for g in range(groups):
                several = several_keys[g]
                everything = [v[h][j] for j in range(groups)] + ([k[h][j] for j in range(groups)] if several else [])
                merged = _merged(everything)
                out = merged._earlier(pattern, limits)
                for j in pattern.same_position_groups(g):
                    out = out.union(v[h][j])
                    if several:
                        out = out.union(k[h][j])
                if several:
                    out = out.union(q[h][g])
                rows.append(out._clipped(limits))
        joined = rows[0].concat(rows[1:])
        return joined._new(joined.rows, pattern.channel_rows(values.channels), joined.origin)

    def _earlier(self, pattern: AttentionPattern, limits: Sequence[int]) -> OffsetDeps:
        """This one-row table moved by every allowed offset other than zero (the Minkowski sum)."""
        nd, table = self.nd, self._clipped(limits)
        if not table.rows.any():
            return table
        if pattern.window is not None:
            offsets = pattern.window_offsets(limits)
            if not offsets:
                return table.empty(1, ())
            lo = [min(o[d] for o in offsets) for d in range(nd)]
            hi = [max(o[d] for o in offsets) for d in range(nd)]
            conn = np.zeros((1, 1) + tuple(b - a + 1 for a, b in zip(lo, hi)), dtype=bool)
            for offset in offsets:
                conn[(0, 0) + tuple(o - a for o, a in zip(offset, lo))] = True
            return table.conv(conn, (1,) * nd, tuple(-a for a in lo), ())._clipped(limits)
        box = tuple(2 * n - 1 for n in limits)
        out = np.zeros((1,) + box + (table.rows.shape[-1],), dtype=bool)
        flat = out.reshape(-1, out.shape[-1])
        for c in range(table.rows.shape[-1]):
            present = np.argwhere(table.rows[0, ..., c])
            if not len(present):
                continue
            if not pattern.earlier_only():
                flat[:, c] = True
                continue
            shifted = present - np.array(table.origin) + np.array(limits) - 1      # offsets in the big box
            last = max(int(np.ravel_multi_index(tuple(p), box)) for p in shifted)   # C order is lexicographic
            flat[:last, c] = True
        return table._new(out, np.zeros(1, dtype=int), tuple(n - 1 for n in limits))._trimmed()

    def _clipped(self, limits: Sequence[int]) -> OffsetDeps:
        """Drop offsets whose size reaches the image size in some axis (never realisable)."""
        lo, hi = self._bounds()
        new_lo = [max(low, -(n - 1)) for low, n in zip(lo, limits)]
        new_hi = [min(h, n - 1) for h, n in zip(hi, limits)]
        if new_lo == lo and new_hi == hi:
            return self
        if any(a > b for a, b in zip(new_lo, new_hi)):     # every offset is out of reach: no dependency
            return self._new(np.zeros((self.rows.shape[0],) + (1,) * self.nd + (self.rows.shape[-1],), dtype=bool),
                             self.chan, (0,) * self.nd)
        sl = tuple(slice(a - low, b - low + 1) for a, b, low in zip(new_lo, new_hi, lo))
        return self._new(self.rows[(slice(None),) + sl], self.chan, tuple(-a for a in new_lo))._trimmed()

    def element_offsets(self, groups: int, params: int) -> np.ndarray:
        """Per data channel g and phase φ (position mod `fold`, flattened): (G, fold^d, *box, Cx),
        the offsets from the phase's coarse anchor (the element's position minus φ) that its
        distribution parameters read."""
        if self.stride != self.fold:
            raise NotTranslationEquivariant("an output that is not at the event's resolution")
        per = self.rows[self.chan].reshape((params, groups, self.phases) + self.rows.shape[1:])
        return per.any(axis=0)


def _merged(parts: Sequence[OffsetDeps]) -> OffsetDeps:
    """One row reading everything the given one-row tables read."""
    out = parts[0]
    for p in parts[1:]:
        out = out.union(p)
    return out._new(np.any(out.rows, axis=0, keepdims=True), np.zeros(1, dtype=int), out.origin)


def _head_group_parts(deps: OffsetDeps, pattern: AttentionPattern) -> list[list[OffsetDeps]]:
    """[head][group]: one-row tables of what the channels of each head and group read."""
    owner = pattern.channel_rows(deps.channels)
    return [[_merged([deps.select(np.nonzero(owner == h * pattern.groups + g)[0])]) for g in range(pattern.groups)]
            for h in range(pattern.heads)]
