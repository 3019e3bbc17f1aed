"""attend — multi-head scaled dot-product attention over (position, channel group) tokens, each
query reading only the keys its `AttentionPattern` allows (the ordering's rank rule, optionally a
window); positions — a table of positional features (learned, sinusoidal or coordinates).

Tensors are laid out as everywhere else: channel j serves channel group j mod G; within a group,
heads are consecutive blocks of channels. A query with no allowed key outputs exactly zero (never
NaN, never a uniform average over every key)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from arspec.domains import Deps
from arspec.domains.pattern import AttentionPattern
from arspec.primitives.base import Param, Primitive
from arspec.primitives.step import StepBuilder
from arspec.types import TensorType

PositionKind = Literal["learned", "sinusoidal", "coordinates"]


@dataclass(eq=False)
class Attend(Primitive):
    """attend(q, k, v): per head, softmax(q·k / sqrt(d)) over the allowed keys, times v."""

    kind = "attend"
    mask_sets = True
    uses_training_mode = True
    min_args = 3
    max_args = 3

    pattern: AttentionPattern
    dropout: float = 0.0

    def out_type(self, args: Sequence[TensorType]) -> TensorType:
        return TensorType(args[2].channels, args[0].spatial)

    def buffers(self) -> dict[str, np.ndarray]:
        out = {"query_rank": self.pattern.query_rank.astype(np.int64), "key_rank": self.pattern.key_rank.astype(np.int64)}
        if self.pattern.window is not None:
            out["coords"] = self.pattern.coords.astype(np.int64)
        return out

    def attrs(self) -> dict[str, Any]:
        return {"groups": self.pattern.groups, "heads": self.pattern.heads, "causal": self.pattern.causal,
                "window": self.pattern.window, "stride": self.pattern.stride, "chunk": self.pattern.chunk, "dropout": self.dropout,
                "plain_causal": self.plain_causal}

    @property
    def plain_causal(self) -> bool:
        """Tokens in generation order under every mask set, and nothing but the causal rule: the
        allowed keys are a triangle the fused kernels' is_causal draws without a mask."""
        p = self.pattern
        if p.causal not in ("strict", "non_strict") or p.window is not None or p.stride is not None or p.chunk is not None:
            return False
        queries = np.asarray(p.query_rank).reshape(-1, p.tokens)
        keys = np.asarray(p.key_rank).reshape(-1, p.tokens)
        return all(_triangular(q, k) for q, k in zip(queries, keys))

    def footprint(self, args: Sequence[Deps], out: TensorType, mask: int) -> Deps:
        return args[0].attend(args[1], args[2], self.pattern, mask)

    def step(self, b: StepBuilder) -> int:
        """The query at the position against the keys and values of every position the pattern
        allows (dropout is off in generation)."""
        p = self.pattern
        return b.attend(b.read(0, (0,) * b.rank), 1, 2, p.heads, p.groups, p.causal, p.window, p.stride, p.chunk)


@dataclass(eq=False)
class Positions(Primitive):
    """A (C, *S) table that reads no data: learned, sinusoidal (Vaswani et al. 2017, channels split
    over the axes) or the coordinates of each position scaled to [-0.5, 0.5) (PixelSNAIL's
    background)."""

    kind = "positions"
    min_args = 0
    max_args = 0

    channels: int
    spatial: tuple[int, ...]
    mode: PositionKind

    def out_type(self, args: Sequence[TensorType]) -> TensorType:
        return TensorType(self.channels, self.spatial)

    def params(self) -> dict[str, Param]:
        if self.mode == "learned":
            return {"table": Param((self.channels,) + self.spatial, "normal", 0.02)}
        return {}

    def buffers(self) -> dict[str, np.ndarray]:
        if self.mode == "learned":
            return {}
        return {"table": position_table(self.mode, self.channels, self.spatial)}

    def footprint(self, args: Sequence[Deps], out: TensorType, mask: int) -> Deps:
        raise AssertionError("a primitive without arguments reads no data (see analysis.propagate)")


def position_table(mode: PositionKind, channels: int, spatial: tuple[int, ...]) -> np.ndarray:
    """The fixed tables: sinusoids of geometric wavelengths per axis, or scaled coordinates."""
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in spatial], indexing="ij")
    if mode == "coordinates":
        return np.stack([(g - n / 2) / n for g, n in zip(grids, spatial)]).astype(np.float32)
    per_axis = channels // len(spatial)
    table = np.zeros((channels,) + spatial)
    for axis, grid in enumerate(grids):
        pairs = per_axis // 2
        rates = 1.0 / 10000 ** (np.arange(pairs) / max(1, pairs))
        angles = rates[:, None] * grid.reshape(1, -1)
        base = axis * per_axis
        table[base:base + pairs] = np.sin(angles).reshape((pairs,) + spatial)
        table[base + pairs:base + 2 * pairs] = np.cos(angles).reshape((pairs,) + spatial)
    return table.astype(np.float32)


def _triangular(query: np.ndarray, key: np.ndarray) -> bool:
    """Whether `key[s] < query[t]` holds exactly for s < t: both ranks nondecreasing, every key
    ranked below the next query and at or above its own token's query."""
    ordered = bool((np.diff(query) >= 0).all() and (np.diff(key) >= 0).all())
    return ordered and bool((key[:-1] < query[1:]).all() and (key >= query).all())
