"""The type of a tensor in the IR: channels and spatial extent (empty for a dense vector)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class TensorType:
    """`channels` and `spatial` extent of one item (the batch axis is implicit).

    `degrees` (MADE) holds, per mask set, the autoregressive degree of each unit of a dense tensor."""

    channels: int
    spatial: tuple[int, ...]
    degrees: list[np.ndarray] | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.channels, *self.spatial)

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def dense(self) -> bool:
        return not self.spatial
