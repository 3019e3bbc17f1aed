"""space_to_depth / depth_to_space — moving between resolutions (multiscale PixelCNN).

`space_to_depth` folds each f×f block into channels: channel c*f^d + g holds sub-position g of the
block (row-major), so sub-positions become channel groups. `depth_to_space` interleaves the
groups of its arguments (argument i holds `counts[i]` groups) and unfolds them back."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from arspec.domains import Deps
from arspec.primitives.base import Primitive
from arspec.types import TensorType


def interleave_index(counts: Sequence[int], per_group: int) -> np.ndarray:
    """For arguments concatenated channel-wise (argument i: per_group*counts[i] channels, layout
    ch*counts[i] + j), the concatenated channel that feeds merged channel ch*sum(counts) + g."""
    index = []
    starts = np.cumsum([0] + [per_group * n for n in counts])
    for ch in range(per_group):
        for i, n in enumerate(counts):
            for j in range(n):
                index.append(starts[i] + ch * n + j)
    return np.asarray(index, dtype=np.int64)


@dataclass(eq=False)
class SpaceToDepth(Primitive):
    kind = "space_to_depth"

    factor: int

    def out_type(self, args: Sequence[TensorType]) -> TensorType:
        t = args[0]
        return TensorType(t.channels * self.factor ** len(t.spatial), tuple(s // self.factor for s in t.spatial))

    def attrs(self) -> dict[str, Any]:
        return {"factor": self.factor}

    def footprint(self, args: Sequence[Deps], out: TensorType, mask: int) -> Deps:
        """A stride-f convolution with f^d taps, each feeding its own output group."""
        nd, c = len(out.spatial), args[0].channels
        subs = self.factor ** nd
        conn = np.zeros((c * subs, c) + (self.factor,) * nd, dtype=bool)
        for ch in range(c):
            for g in range(subs):
                conn[(ch * subs + g, ch) + np.unravel_index(g, (self.factor,) * nd)] = True
        return args[0].conv(conn, (1,) * nd, (0,) * nd, out.spatial, stride=(self.factor,) * nd)


@dataclass(eq=False)
class DepthToSpace(Primitive):
    kind = "depth_to_space"
    max_args = None

    factor: int
    counts: tuple[int, ...]

    def out_type(self, args: Sequence[TensorType]) -> TensorType:
        subs = self.factor ** len(args[0].spatial)
        return TensorType(sum(a.channels for a in args) // subs, tuple(s * self.factor for s in args[0].spatial))

    def attrs(self) -> dict[str, Any]:
        return {"factor": self.factor, "counts": tuple(self.counts)}

    def footprint(self, args: Sequence[Deps], out: TensorType, mask: int) -> Deps:
        if len(args) > 1:
            merged = args[0].concat(list(args[1:])).select(interleave_index(self.counts, out.channels))
        else:
            merged = args[0]
        return merged.depth_to_space(self.factor)
