"""channel_norm — layer normalisation over the channels at each position (Ba et al. 2016), one
channel group at a time, so that in R→G→B models a group's statistics never include a later
group's channels."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from arspec.domains import Deps
from arspec.primitives.base import Param, Primitive, Taps, same_position
from arspec.primitives.step import StepBuilder
from arspec.types import TensorType


@dataclass(eq=False)
class ChannelNorm(Primitive):
    """(x - mean) / sqrt(var + eps) * weight + bias, statistics over the channels of one group."""

    kind = "channel_norm"

    channels: int
    groups: int

    def out_type(self, args: Sequence[TensorType]) -> TensorType:
        return TensorType(args[0].channels, args[0].spatial)

    def params(self) -> dict[str, Param]:
        return {"weight": Param((self.channels,), "ones"), "bias": Param((self.channels,), "zeros")}

    def attrs(self) -> dict[str, Any]:
        return {"groups": self.groups}

    def footprint(self, args: Sequence[Deps], out: TensorType, mask: int) -> Deps:
        group = np.arange(self.channels) % self.groups
        conn = (group[:, None] == group[None, :]).reshape((self.channels, self.channels) + (1,) * len(out.spatial))
        rank = len(out.spatial)
        return args[0].conv(conn, (1,) * rank, (0,) * rank, out.spatial)

    def taps(self, rank: int, arguments: int) -> list[Taps] | None:
        return same_position(rank)

    def step(self, b: StepBuilder) -> int:
        return b.norm(b.read(0, (0,) * b.rank), "weight", "bias", self.groups)
