"""The shared rule of every convolution-like op: a connectivity array plus padding and dilation.

An op subclass only says *which taps and channels connect* (`geometry`); the footprint, the torch
module and the parameter count all follow from that one description."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from arspec.analysis.deps import Deps
from arspec.ops.base import LowerContext, Op, ShapeError, TensorType, output_channels
from arspec.runtime.layers import MaskedConv


MAX_CHANNELS = 1_000_000
MAX_LAYER_WEIGHTS = 200_000_000


@dataclass
class ConvGeometry:
    """connectivity (Co, Ci, *kernel), dilation, zero padding before/after each spatial axis."""

    connectivity: np.ndarray
    dilation: tuple[int, ...]
    pad_before: tuple[int, ...]
    pad_after: tuple[int, ...]

    def out_spatial(self, spatial: Sequence[int]) -> tuple[int, ...]:
        kernel = self.connectivity.shape[2:]
        return tuple(s + b + a - d * (k - 1) for s, b, a, d, k in zip(spatial, self.pad_before, self.pad_after, self.dilation, kernel))


class ConvOp(Op):
    """Base of convolution-like ops; subclasses implement `geometry` and `spatial_rank`."""

    spatial_rank: int | None = None  # required rank of the input's spatial extent (None: any >= 1)

    def geometry(self, spec: Any, inp: TensorType, ctx: LowerContext) -> ConvGeometry:
        raise NotImplementedError

    def infer(self, spec: Any, inputs: Sequence[TensorType], ctx: LowerContext) -> tuple[TensorType, dict[str, Any]]:
        inp = inputs[0]
        if not inp.spatial:
            raise ShapeError(f"{self.name} needs an input with spatial positions, got a dense vector of {inp.channels}", "inputs")
        if self.spatial_rank is not None and len(inp.spatial) != self.spatial_rank:
            raise ShapeError(f"{self.name} needs a {self.spatial_rank}-d input, got spatial shape {list(inp.spatial)}", "inputs")
        self._guard_size(spec, inp, ctx)
        geom = self.geometry(spec, inp, ctx)
        out_spatial = geom.out_spatial(inp.spatial)
        if any(s < 1 for s in out_spatial):
            raise ShapeError(f"the kernel does not fit: output spatial shape would be {list(out_spatial)}", "kernel")
        return TensorType(int(geom.connectivity.shape[0]), out_spatial), {"geometry": geom}

    def _guard_size(self, spec: Any, inp: TensorType, ctx: LowerContext) -> None:
        """Reject absurd layers before their connectivity array is allocated."""
        channels = output_channels(getattr(spec, "channels", 1), ctx)
        kernel = getattr(spec, "kernel", 1)
        taps = int(np.prod(kernel)) if isinstance(kernel, list) else int(kernel) ** len(inp.spatial)
        weights = channels * inp.channels * taps
        if channels > MAX_CHANNELS or weights > MAX_LAYER_WEIGHTS:
            raise ShapeError(f"layer too large: {channels:,} channels, {weights:,} weights (limit {MAX_LAYER_WEIGHTS:,})", "channels")

    def footprint(self, spec: Any, attrs: dict[str, Any], inputs: Sequence[Deps], out: TensorType, mask: int) -> Deps:
        g: ConvGeometry = attrs["geometry"]
        return inputs[0].conv(g.connectivity, g.dilation, g.pad_before, out.spatial)

    def build(self, spec: Any, attrs: dict[str, Any], inputs: Sequence[TensorType], out: TensorType, ctx: LowerContext):
        g: ConvGeometry = attrs["geometry"]
        return MaskedConv(g.connectivity, g.dilation, g.pad_before, g.pad_after, bias=getattr(spec, "bias", True))

    def parameter_count(self, spec: Any, attrs: dict[str, Any], inputs: Sequence[TensorType], out: TensorType) -> int:
        kernel = getattr(spec, "kernel", 1)
        k = int(np.prod(kernel)) if isinstance(kernel, (list, tuple)) else int(kernel) ** max(1, len(inputs[0].spatial))
        return out.channels * inputs[0].channels * k + out.channels


def kernel_tuple(kernel: int | list[int], rank: int) -> tuple[int, ...]:
    """An int kernel means the same size on every spatial axis."""
    if isinstance(kernel, int):
        return (kernel,) * rank
    if len(kernel) != rank:
        raise ShapeError(f"kernel needs {rank} sizes, got {kernel}", "kernel")
    return tuple(kernel)
