"""Primitives of the conditioning path: a learned projection of a context input into an op's
channels, and the upsampling of a local feature map to the event's resolution. A context input
never reads the data; if a graph node used as a condition does, the verifier reports it."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from arspec.domains import Deps
from arspec.primitives.base import Param, Primitive, Taps, same_position
from arspec.types import TensorType


@dataclass(eq=False)
class ContextProjection(Primitive):
    """Global (one-hot, dense) context -> a per-channel bias broadcast over positions; local
    context (channels at every position) -> a 1x1 projection."""

    kind = "context_projection"

    in_channels: int
    out_channels: int
    spatial: tuple[int, ...]          # of the op output it is added to
    local: bool

    def out_type(self, args: Sequence[TensorType]) -> TensorType:
        return TensorType(self.out_channels, self.spatial)

    def params(self) -> dict[str, Param]:
        return {"weight": Param((self.out_channels, self.in_channels), "uniform", 1.0 / max(1, self.in_channels) ** 0.5)}

    def attrs(self) -> dict[str, Any]:
        return {"local": self.local, "rank": len(self.spatial)}

    def footprint(self, args: Sequence[Deps], out: TensorType, mask: int) -> Deps:
        source = args[0]
        if source.is_empty():
            return source.empty(out.channels, out.spatial)
        if self.local:
            rank = len(out.spatial)
            conn = np.ones((out.channels, source.channels) + (1,) * rank, dtype=bool)
            return source.conv(conn, (1,) * rank, (0,) * rank, out.spatial)
        return source.broadcast_all(out.channels, out.spatial)

    def taps(self, rank: int, arguments: int) -> list[Taps] | None:
        return same_position(rank) if self.local else None


@dataclass(eq=False)
class Upsample(Primitive):
    """A local feature map to `factor` times its resolution, by repetition or a learned transposed
    convolution (sequences)."""

    kind = "upsample"

    channels: int
    factor: int
    mode: Literal["repeat", "transposed"]

    def out_type(self, args: Sequence[TensorType]) -> TensorType:
        return TensorType(self.channels, tuple(s * self.factor for s in args[0].spatial))

    def params(self) -> dict[str, Param]:
        if self.mode != "transposed":
            return {}
        bound = 1.0 / (self.channels * self.factor) ** 0.5
        return {"weight": Param((self.channels, self.channels, self.factor), "uniform", bound),
                "bias": Param((self.channels,), "uniform", bound)}

    def attrs(self) -> dict[str, Any]:
        return {"factor": self.factor, "mode": self.mode}

    def footprint(self, args: Sequence[Deps], out: TensorType, mask: int) -> Deps:
        if args[0].is_empty():
            return args[0].empty(out.channels, out.spatial)
        return args[0].broadcast_all(out.channels, out.spatial)
