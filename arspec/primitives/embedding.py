"""embedding — a learned vector per class of each data element (WaveNet's input layer). Reads the
data as class indices; output channel j embeds data channel j mod G."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from arspec.domains import Deps
from arspec.primitives.base import Param, Primitive, Taps, same_position
from arspec.primitives.step import StepBuilder
from arspec.types import TensorType


def channel_group(channels: int, groups: int) -> np.ndarray:
    """The data channel each feature channel belongs to: channel j serves group j mod G."""
    return np.arange(channels) % groups


@dataclass(eq=False)
class Embedding(Primitive):
    """out[j, p] = weight[j mod G, x[j mod G, p], j]."""

    kind = "embedding"
    reads_raw = True

    groups: int
    classes: int
    channels: int

    def out_type(self, args: Sequence[TensorType]) -> TensorType:
        return TensorType(self.channels, args[0].spatial)

    def params(self) -> dict[str, Param]:
        return {"weight": Param((self.groups, self.classes, self.channels), "normal", 0.5)}

    def buffers(self) -> dict[str, np.ndarray]:
        own = channel_group(self.channels, self.groups)[None, :] == np.arange(self.groups)[:, None]
        return {"select": own.astype(np.float32)}                    # (G, channels)

    def footprint(self, args: Sequence[Deps], out: TensorType, mask: int) -> Deps:
        rank = len(out.spatial)
        conn = channel_group(self.channels, self.groups)[:, None] == np.arange(self.groups)[None, :]
        return args[0].conv(conn.reshape(conn.shape + (1,) * rank), (1,) * rank, (0,) * rank, out.spatial)

    def taps(self, rank: int, arguments: int) -> list[Taps] | None:
        return same_position(rank)

    def step(self, b: StepBuilder) -> int:
        return b.embed(0, "weight", self.channels, select="select")
