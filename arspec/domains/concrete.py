"""`ConcreteDeps`: for each position, which of N chosen data elements it reads. Exact at every
position, borders included; used for small events and for tracing paths."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from arspec.domains.base import Deps, reduce_connectivity, shift_array, unique_rows
from arspec.domains.pattern import AttentionPattern, causal_allows


@dataclass
class ConcreteDeps(Deps):
    """rows: (R, *S, N) booleans over N data elements (`columns` gives their flat indices)."""

    columns: np.ndarray

    @property
    def spatial(self) -> tuple[int, ...]:
        return tuple(self.rows.shape[1:-1])

    def _like(self, rows: np.ndarray, chan: np.ndarray) -> ConcreteDeps:
        return ConcreteDeps(rows, chan, self.columns)

    @staticmethod
    def data(event: tuple[int, ...], columns: np.ndarray | None = None) -> ConcreteDeps:
        """The data tensor x of shape `event` = (C, *S): each element depends on itself."""
        n = int(np.prod(event))
        columns = np.arange(n) if columns is None else np.asarray(columns, dtype=int)
        rows = np.zeros((event[0],) + tuple(event[1:]) + (len(columns),), dtype=bool)
        flat = rows.reshape(event[0] * int(np.prod(event[1:], dtype=int)), len(columns))
        flat[columns, np.arange(len(columns))] = True
        return ConcreteDeps(rows, np.arange(event[0]), columns)

    def empty(self, channels: int, spatial: tuple[int, ...]) -> ConcreteDeps:
        """A tensor that reads no data (a conditioning input, a constant)."""
        return ConcreteDeps(np.zeros((1,) + spatial + (len(self.columns),), dtype=bool), np.zeros(channels, dtype=int), self.columns)

    def only_sources(self, keep: np.ndarray) -> ConcreteDeps:
        rows = self.rows & np.asarray(keep, dtype=bool)[self.columns]
        return ConcreteDeps(rows, self.chan.copy(), self.columns)

    def conv(self, conn: np.ndarray, dilation: Sequence[int], pad_before: Sequence[int],
             out_spatial: Sequence[int], stride: Sequence[int] | None = None) -> ConcreteDeps:
        """out[co, p] reads in[ci, p*stride + k*dilation - pad_before] for every tap k with conn[co, ci, k]."""
        nd = conn.ndim - 2
        stride = tuple(stride or (1,) * nd)
        row_conn = reduce_connectivity(conn, self.chan, self.rows.shape[0])
        patterns, out_chan = unique_rows(row_conn)
        s_in = self.spatial
        out = np.zeros((patterns.shape[0],) + tuple(out_spatial) + (self.rows.shape[-1],), dtype=bool)
        for r, pattern in enumerate(patterns):
            for idx in zip(*np.nonzero(pattern)):
                ri, tap = idx[0], idx[1:]
                out_sl, in_sl = [], []
                for d in range(nd):
                    shift = tap[d] * dilation[d] - pad_before[d]
                    # valid p: 0 <= p*stride + shift < s_in, 0 <= p < out
                    lo = (-shift + stride[d] - 1) // stride[d] if shift < 0 else 0
                    last = s_in[d] - 1 - shift
                    hi = min(out_spatial[d], last // stride[d] + 1) if last >= 0 else 0
                    if hi <= lo:
                        break
                    out_sl.append(slice(lo, hi))
                    in_sl.append(slice(lo * stride[d] + shift, (hi - 1) * stride[d] + shift + 1, stride[d]))
                else:
                    out[(r, *out_sl)] |= self.rows[(ri, *in_sl)]  # type: ignore[arg-type]
        return ConcreteDeps(out, out_chan, self.columns)

    def dense(self, conn: np.ndarray) -> ConcreteDeps:
        """A fully connected layer over all units (c, *p) flattened in C order; conn: (F, C*prod(S))."""
        units = self.rows[self.chan].reshape(-1, self.rows.shape[-1]).astype(np.float32)
        out = (conn.astype(np.float32) @ units) > 0
        rows, chan = unique_rows(out)
        return ConcreteDeps(rows, chan, self.columns)

    def flatten(self) -> ConcreteDeps:
        """Every unit (c, *p), in C order, as one channel of a vector."""
        rows, chan = unique_rows(self.rows[self.chan].reshape(-1, self.rows.shape[-1]))
        return ConcreteDeps(rows, chan, self.columns)

    def union(self, other: Deps) -> ConcreteDeps:
        assert isinstance(other, ConcreteDeps)
        """An elementwise merge (add, multiply) of two tensors of the same shape."""
        pairs = np.stack([self.chan, other.chan], axis=1)
        uniq, chan = np.unique(pairs, axis=0, return_inverse=True)
        rows = self.rows[uniq[:, 0]] | other.rows[uniq[:, 1]]
        return ConcreteDeps(rows, chan.reshape(-1), self.columns)

    def broadcast_all(self, channels: int, spatial: tuple[int, ...]) -> ConcreteDeps:
        """Every output reads every input position (global pooling followed by broadcast)."""
        seen = self.rows.reshape(self.rows.shape[0], -1, self.rows.shape[-1]).any(axis=(0, 1))
        rows = np.broadcast_to(seen, (1,) + spatial + seen.shape).copy()
        return ConcreteDeps(rows, np.zeros(channels, dtype=int), self.columns)

    def concat(self, others: Sequence[Deps]) -> ConcreteDeps:
        rows, chans, base = [], [], 0
        for d in (self, *others):
            rows.append(d.rows)
            chans.append(d.chan + base)
            base += d.rows.shape[0]
        return ConcreteDeps(np.concatenate(rows), np.concatenate(chans), self.columns)

    def closure(self, offsets: Sequence[tuple[int, ...]], groups: int, channels: int, limits: Sequence[int] = ()) -> ConcreteDeps:
        """A spatial recurrence: the least S with S_g = self_g ∪ ⋃_o shift(⋃_g' S_g', o), where
        S_g is the state of channel group g and `offsets` are the state-to-state taps (positions
        read, relative). Exact at borders: iterated position by position until nothing changes."""
        group_rows = [self.rows[np.unique(self.chan[np.arange(self.channels) % groups == g])].any(axis=0) for g in range(groups)]
        inputs = np.stack(group_rows)                             # (G, *S, N)
        state = inputs.copy()
        while True:
            merged = np.any(state, axis=0)
            reach = np.zeros_like(merged)
            for off in offsets:
                reach |= shift_array(merged, off)
            nxt = inputs | reach[None]
            if np.array_equal(nxt, state):
                break
            state = nxt
        return ConcreteDeps(state, np.arange(channels) % groups, self.columns)

    def attend(self, keys: Deps, values: Deps, pattern: AttentionPattern, mask: int) -> ConcreteDeps:
        assert isinstance(keys, ConcreteDeps) and isinstance(values, ConcreteDeps)
        q, k, v = (_token_table(d, pattern) for d in (self, keys, values))       # (H, T, N)
        count, reach = _reach(pattern, mask)
        several = (count >= 2)[None, :, None]
        tokens = (several & (q | reach(k))) | reach(v)                            # (H, T, N)
        groups, positions = pattern.groups, int(np.prod(pattern.spatial))
        rows = tokens.reshape(pattern.heads, positions, groups, -1).transpose(0, 2, 1, 3)
        rows = rows.reshape((pattern.heads * groups,) + pattern.spatial + (tokens.shape[-1],))
        return ConcreteDeps(rows, pattern.channel_rows(values.channels), self.columns)

    def depth_to_space(self, factor: int) -> ConcreteDeps:
        """Channel c*f^d + g moves to sub-position g (row-major in an f^d block) of channel c at
        f times the resolution: the inverse of a stride-f space-to-depth."""
        nd = len(self.spatial)
        subs = factor ** nd
        out_channels = self.channels // subs
        combos, chan = np.unique(self.chan.reshape(out_channels, subs), axis=0, return_inverse=True)
        spatial = tuple(s * factor for s in self.spatial)
        rows = np.zeros((combos.shape[0],) + spatial + (self.rows.shape[-1],), dtype=bool)
        for r, combo in enumerate(combos):
            for g, src in enumerate(combo):
                offset = np.unravel_index(g, (factor,) * nd)
                rows[(r,) + tuple(slice(int(o), None, factor) for o in offset)] = self.rows[src]
        return ConcreteDeps(rows, chan.reshape(-1), self.columns)

    def element_table(self, groups: int, params: int, dense: bool) -> np.ndarray:
        """Per data element, the elements its distribution parameters read: (E, N).

        Output parameters are laid out parameter-major: channel k*G + g (conv) or unit k*D + d (dense).
        """
        if dense:
            units = self.rows[self.chan].reshape(params, -1, self.rows.shape[-1])
            return units.any(axis=0)
        per = self.rows[self.chan].reshape((params, groups) + self.spatial + (self.rows.shape[-1],))
        return per.any(axis=0).reshape(-1, self.rows.shape[-1])


def _reach(pattern: AttentionPattern, mask: int) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """(keys per query token, f) where f(table (H, T, N)) is, per query token, the union of the
    table over its allowed keys. Without a window the allowed keys are those of lower rank, so
    the union is a prefix OR over the keys sorted by rank (O(T N), any image size); with one, an
    OR over the window's offsets."""
    m = mask % pattern.query_rank.shape[0]
    query_rank, key_rank = pattern.query_rank[m], pattern.key_rank[m]
    tokens = len(query_rank)
    if pattern.stride is not None or pattern.chunk is not None:
        return _reach_by_rows(pattern, m, tokens)
    if pattern.window is None:
        if pattern.causal == "none":
            count = np.full(tokens, tokens)
            return count, lambda table: np.broadcast_to(table.any(axis=1, keepdims=True), table.shape)
        order = np.argsort(key_rank, kind="stable")
        earlier = np.searchsorted(key_rank[order], query_rank, side="left")       # keys ranked below each query
        own = pattern.causal == "non_strict"

        def reach(table: np.ndarray) -> np.ndarray:
            prefix = np.logical_or.accumulate(table[:, order], axis=1)
            padded = np.concatenate([np.zeros_like(prefix[:, :1]), prefix], axis=1)
            out = padded[:, earlier]
            return out | table if own else out
        return earlier + int(own), reach
    pairs = _window_pairs(pattern, query_rank, key_rank)
    count = np.bincount(pairs[0], minlength=tokens)
    return count, lambda table: _gather_or(table, pairs, tokens)


def _reach_by_rows(pattern: AttentionPattern, mask: int, tokens: int) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """Strided and block patterns: boolean products over blocks of query rows (any pattern)."""
    blocks = range(0, tokens, 1024)
    count = np.concatenate([pattern.rows(mask, slice(b, b + 1024)).sum(axis=1) for b in blocks])

    def reach(table: np.ndarray) -> np.ndarray:
        flat = table.astype(np.float32)
        out = np.zeros(table.shape, dtype=bool)
        for b in blocks:
            allowed = pattern.rows(mask, slice(b, b + 1024)).astype(np.float32)
            for h in range(table.shape[0]):
                out[h, b:b + 1024] = (allowed @ flat[h]) > 0
        return out
    return count, reach


def _window_pairs(pattern: AttentionPattern, query_rank: np.ndarray, key_rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(query tokens, key tokens) of every allowed pair under a window: only the window's offsets
    are enumerated, so the cost grows with the window, not with the square of the image."""
    assert pattern.window is not None
    coords, groups, spatial = pattern.coords, pattern.groups, np.array(pattern.spatial)
    queries, keys = [], []
    for offset in np.ndindex(*[hi - lo + 1 for lo, hi in pattern.window]):
        move = np.array([o + lo for o, (lo, _) in zip(offset, pattern.window)])
        src = coords + move
        inside = np.all((src >= 0) & (src < spatial), axis=1)
        p = np.nonzero(inside)[0]
        q_pos = np.ravel_multi_index(tuple(src[inside].T), pattern.spatial) if len(p) else p
        for g in range(groups):
            for h in range(groups):
                t, s = p * groups + g, q_pos * groups + h
                ok = causal_allows(query_rank[t], key_rank[s], s == t, pattern.causal)
                queries.append(t[ok])
                keys.append(s[ok])
    return np.concatenate(queries), np.concatenate(keys)


def _gather_or(table: np.ndarray, pairs: tuple[np.ndarray, np.ndarray], tokens: int) -> np.ndarray:
    """out[:, t] = OR of table[:, s] over the pairs (t, s), in rounds of one pair per query."""
    t_all, s_all = pairs
    order = np.argsort(t_all, kind="stable")
    t_sorted, s_sorted = t_all[order], s_all[order]
    starts = np.searchsorted(t_sorted, np.arange(tokens))
    slot = np.arange(len(t_sorted)) - starts[t_sorted]
    out = np.zeros(table.shape, dtype=bool)
    for k in range(int(slot.max()) + 1 if len(slot) else 0):
        pick = slot == k
        out[:, t_sorted[pick]] |= table[:, s_sorted[pick]]
    return out


def _token_table(deps: ConcreteDeps, pattern: AttentionPattern) -> np.ndarray:
    """(H, T, N): what each head of each token (position-major, p * G + g) reads."""
    positions, groups = int(np.prod(pattern.spatial)), pattern.groups
    owner = pattern.channel_rows(deps.channels)
    out = np.zeros((pattern.heads * groups, positions, deps.rows.shape[-1]), dtype=bool)
    for row in range(pattern.heads * groups):
        used = np.unique(deps.chan[owner == row])
        out[row] = deps.rows[used].reshape(len(used), positions, -1).any(axis=0)
    return out.reshape(pattern.heads, groups, positions, -1).transpose(0, 2, 1, 3).reshape(pattern.heads, positions * groups, -1)
