"""Which keys a query may attend to: the one rule of every attention layer, derived from the
spec's ordering. Tokens are (position, channel group) units laid out position-major (token
p * G + g); each has a rank taken from the ordering's steps. Both dependency domains and every
backend read the allowed set from here, so the mask the verifier analyses is the mask the kernel
applies."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product
from typing import Literal

import numpy as np

Causal = Literal["strict", "non_strict", "none"]


def allowed_keys(query_rank: np.ndarray, key_rank: np.ndarray, coords: np.ndarray, causal: str,
                 window: tuple[tuple[int, int], ...] | None, groups: int, queries: slice = slice(None),
                 stride: int | None = None, chunk: int | None = None) -> np.ndarray:
    """(T, T) booleans: may query token t read key token s? (`queries`: only those rows.)

    strict: the key's last element comes before the query's first (nothing of the query's own
    token, so keys may read the raw input); non_strict: that, or the very same token (inputs
    already shifted); none: every token. A window keeps keys whose position lies within
    [lo, hi] of the query's along each axis; `stride` keeps keys whose flat (raster) position
    differs from the query's by a multiple of it, `chunk` those in the query's chunk of that many
    flat positions (the Sparse Transformer's strided and fixed heads). Patterns only remove keys."""
    tokens = len(query_rank)
    rows = np.arange(tokens)[queries]
    allowed = causal_allows(query_rank[rows, None], key_rank[None, :], rows[:, None] == np.arange(tokens)[None, :], causal)
    if window is not None:
        position = coords[np.arange(tokens) // groups]                       # (T, d)
        rel = position[None, :, :] - position[rows, None, :]                 # key minus query
        lo = np.array([w[0] for w in window])
        hi = np.array([w[1] for w in window])
        allowed &= np.all((rel >= lo) & (rel <= hi), axis=-1)
    flat_q, flat_k = rows // groups, np.arange(tokens) // groups
    if stride is not None:
        allowed &= (flat_q[:, None] - flat_k[None, :]) % stride == 0
    if chunk is not None:
        allowed &= flat_q[:, None] // chunk == flat_k[None, :] // chunk
    return allowed


def causal_allows(query_rank: np.ndarray, key_rank: np.ndarray, same: np.ndarray, causal: str) -> np.ndarray:
    """The causal rule on broadcast pairs: strict, a key ranked below the query; non_strict, that
    or the very same token (`same`); none, every pair."""
    if causal == "none":
        return np.broadcast_to(np.ones((), dtype=bool), np.broadcast_shapes(query_rank.shape, key_rank.shape, same.shape)).copy()
    allowed = key_rank < query_rank
    return allowed | same if causal == "non_strict" else allowed


def token_ranks(order: np.ndarray, groups: int) -> tuple[np.ndarray, np.ndarray]:
    """(query, key) rank of every token, position-major (p * G + g), from the (C, P) steps of an
    ordering: a grouped token's is its element's step; a whole position's are the first and last
    steps of its elements (strict then means every element of the key before every one of the query)."""
    if groups == 1:
        return order.min(axis=0), order.max(axis=0)
    return order.T.reshape(-1), order.T.reshape(-1)


@dataclass(frozen=True)
class AttentionPattern:
    """The allowed key set of one attention layer, in a form both domains can read.

    `query_rank` / `key_rank`: (M, T) per mask set; a token's rank is its element's step (grouped
    tokens) or the first / last step of its position's elements (a position as one token).
    `raster`: every mask set is the raster ordering, which the offset domain expresses exactly."""

    groups: int
    heads: int
    spatial: tuple[int, ...]
    query_rank: np.ndarray
    key_rank: np.ndarray
    causal: Causal
    window: tuple[tuple[int, int], ...] | None
    raster: bool
    stride: int | None = None
    chunk: int | None = None

    @property
    def tokens(self) -> int:
        return int(np.prod(self.spatial)) * self.groups

    @property
    def coords(self) -> np.ndarray:
        """(P, d) the coordinates of every position, raster order."""
        return np.stack(np.unravel_index(np.arange(int(np.prod(self.spatial))), self.spatial), axis=1)

    def rows(self, mask: int, queries: slice = slice(None)) -> np.ndarray:
        """(queries, T) allowed keys of some query tokens under mask set `mask`."""
        m = mask % self.query_rank.shape[0]
        return allowed_keys(self.query_rank[m], self.key_rank[m], self.coords, self.causal, self.window, self.groups, queries,
                            self.stride, self.chunk)

    def channel_rows(self, channels: int) -> np.ndarray:
        """Row (head * G + group) of every channel of an attention tensor: channel j belongs to
        group j mod G and to head (j // G) // (channels per head and group)."""
        j = np.arange(channels)
        per = max(1, channels // (self.groups * self.heads))
        return ((j // self.groups) // per) * self.groups + j % self.groups

    # -- the offset view (raster only): which relative positions and same-position groups ---------
    def in_window(self, offset: tuple[int, ...]) -> bool:
        return self.window is None or all(lo <= o <= hi for o, (lo, hi) in zip(offset, self.window))

    def same_position_groups(self, g: int) -> list[int]:
        """Key groups at the query's own position that query group g reads (raster order)."""
        if not self.in_window((0,) * len(self.spatial)):
            return []
        if self.causal == "none":
            return list(range(self.groups))
        if self.causal == "strict":
            return list(range(g))
        return list(range(g + 1))

    def earlier_only(self) -> bool:
        """Keys at other positions are all earlier in raster order (not `none`)."""
        return self.causal != "none"

    def window_offsets(self, limits: Sequence[int]) -> list[tuple[int, ...]]:
        """The window's offsets other than zero that keys may sit at (earlier ones only unless
        `none`), inside an image of size `limits`."""
        assert self.window is not None
        box = [range(max(lo, -(n - 1)), min(hi, n - 1) + 1) for (lo, hi), n in zip(self.window, limits)]
        return [o for o in product(*box) if any(o) and (not self.earlier_only() or before_origin(o))]

    def interior_count(self, g: int, limits: Sequence[int]) -> int:
        """How many keys an interior query of group g reads (at least 2 decides whether the
        attention weights, hence queries and keys, matter at all)."""
        if self.window is not None:
            others = len(self.window_offsets(limits))
        else:
            total = int(np.prod([2 * n - 1 for n in limits]))
            others = total - 1 if not self.earlier_only() else (total - 1) // 2
        return others * self.groups + len(self.same_position_groups(g))


def before_origin(offset: tuple[int, ...] | list[int]) -> bool:
    """Lexicographically before the origin (an earlier position in raster order)."""
    for o in offset:
        if o != 0:
            return o < 0
    return False
