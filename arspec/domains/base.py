"""What both dependency domains share: the channel-to-row bookkeeping of `Deps` and small array
helpers. A tensor of shape (C, *S) depends on data elements; channels that depend on the same
elements share a *row*, and `chan[c]` is the row of channel c."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Self

import numpy as np

if TYPE_CHECKING:
    from arspec.domains.pattern import AttentionPattern


class NotTranslationEquivariant(Exception):
    """Raised by `OffsetDeps` for an op it cannot express exactly (dense layers, global pooling,
    a strided convolution over a periodic tensor)."""


def unique_rows(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Deduplicate rows of a boolean table: (unique rows, index of each original row)."""
    flat = table.reshape(table.shape[0], -1)
    packed = np.packbits(flat, axis=1)
    _, first, inverse = np.unique(packed, axis=0, return_index=True, return_inverse=True)
    return table[first], inverse.reshape(-1)


def reduce_connectivity(conn: np.ndarray, chan_in: np.ndarray, rows_in: int) -> np.ndarray:
    """(Co, Ci, *K) channel connectivity -> (Co, Ri, *K) row connectivity."""
    out = np.zeros((conn.shape[0], rows_in) + conn.shape[2:], dtype=bool)
    for c, r in enumerate(chan_in):
        out[:, r] |= conn[:, c]
    return out


def shift_array(table: np.ndarray, offset: Sequence[int], fill=False) -> np.ndarray:
    """out[p] = table[p + offset] over the leading axes, `fill` where p + offset is outside."""
    out = np.full_like(table, fill)
    dst, src = [], []
    for n, o in zip(table.shape, offset):
        lo, hi = max(0, -o), min(n, n - o)
        if hi <= lo:
            return out
        dst.append(slice(lo, hi))
        src.append(slice(lo + o, hi + o))
    out[tuple(dst)] = table[tuple(src)]
    return out


@dataclass
class Deps:
    """Shared behaviour of both domains: channel-to-row bookkeeping."""

    rows: np.ndarray
    chan: np.ndarray

    @property
    def channels(self) -> int:
        return int(self.chan.shape[0])

    def select(self, channels: Sequence[int] | np.ndarray) -> Self:
        """The dependency sets of a subset of channels (a split, a gate half)."""
        chan = self.chan[np.asarray(channels, dtype=int)]
        used, inverse = np.unique(chan, return_inverse=True)
        return self._like(self.rows[used], inverse.reshape(-1))

    def _like(self, rows: np.ndarray, chan: np.ndarray) -> Self:
        raise NotImplementedError

    # -- the rules every domain implements (primitives' footprints are written with these) ------
    def empty(self, channels: int, spatial: tuple[int, ...]) -> Deps:
        """A tensor of that shape that reads no data (a constant, a conditioning input)."""
        raise NotImplementedError

    def only_sources(self, keep: np.ndarray) -> Deps:
        """The same tensor, its dependencies on data elements outside `keep` (flat booleans over
        the event) removed: what a gate by a concrete mask passes on."""
        raise NotTranslationEquivariant("a concrete mask of observed elements needs the concrete domain")

    def is_empty(self) -> bool:
        return not bool(self.rows.any())

    def conv(self, conn: np.ndarray, dilation: Sequence[int], pad_before: Sequence[int],
             out_spatial: Sequence[int], stride: Sequence[int] | None = None) -> Deps:
        """out[co, p] reads in[ci, p*stride + k*dilation - pad_before] wherever conn[co, ci, k]."""
        raise NotImplementedError

    def dense(self, conn: np.ndarray) -> Deps:
        """A fully connected map over all units (c, *p) flattened in C order; conn: (F, units)."""
        raise NotImplementedError

    def flatten(self) -> Deps:
        """Every unit (c, *p), in C order, as one channel of a vector (a dense map that is the identity)."""
        raise NotTranslationEquivariant("a vector of all units has no positions")

    def union(self, other: Deps) -> Deps:
        """An elementwise merge (add, multiply) of two tensors of the same shape."""
        raise NotImplementedError

    def concat(self, others: Sequence[Deps]) -> Deps:
        """Channels of several tensors side by side."""
        raise NotImplementedError

    def broadcast_all(self, channels: int, spatial: tuple[int, ...]) -> Deps:
        """Every output reads everything the input reads (global pooling, then broadcast)."""
        raise NotImplementedError

    def closure(self, offsets: Sequence[tuple[int, ...]], groups: int, channels: int, limits: Sequence[int]) -> Deps:
        """A spatial recurrence over the state-to-state `offsets` (see the domains)."""
        raise NotImplementedError

    def attend(self, keys: Deps, values: Deps, pattern: AttentionPattern, mask: int) -> Deps:
        """Attention with this tensor as the queries: a query token reads its own query (when it
        has two keys or more: with one key the weights are 1 whatever the scores), the keys and
        the values of every token `pattern` allows it; with no key it is zero and reads nothing.
        Exact when distinct tokens' keys and values differ (positional inputs make sure of it);
        keys that are one and the same constant make the query irrelevant, which this keeps as a
        dependency (an over-approximation, never a missed one)."""
        raise NotImplementedError

    def depth_to_space(self, factor: int) -> Deps:
        """Channel groups unfolded into f×f blocks of positions (inverse of space_to_depth)."""
        raise NotImplementedError
