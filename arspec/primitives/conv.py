"""masked_conv — a convolution of any rank whose weights are multiplied by a fixed connectivity
array (Co, Ci, *kernel), with explicit zero padding before and after each spatial axis.

Every convolution-like op (masked, causal, vertical/horizontal stacks, 1x1, group-masked, 3-D
video) is this one primitive with a different connectivity, so the mask the verifier reads is the
mask the backend multiplies by."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from arspec.domains import Deps
from arspec.primitives.base import Param, Primitive, Taps
from arspec.primitives.step import StepBuilder
from arspec.types import TensorType


@dataclass(eq=False)
class MaskedConv(Primitive):
    """out[co, p] = bias[co] + sum over ci, k of weight[co, ci, k] * conn[co, ci, k] * in[ci, p*stride + k*dilation - pad_before]."""

    kind = "masked_conv"

    connectivity: np.ndarray            # (Co, Ci, *kernel) booleans
    dilation: tuple[int, ...]
    pad_before: tuple[int, ...]
    pad_after: tuple[int, ...]
    stride: tuple[int, ...] | None = None
    bias: bool = True

    @property
    def rank(self) -> int:
        return self.connectivity.ndim - 2

    @property
    def strides(self) -> tuple[int, ...]:
        return self.stride or (1,) * self.rank

    @property
    def kernel(self) -> tuple[int, ...]:
        return tuple(self.connectivity.shape[2:])

    def out_spatial(self, spatial: Sequence[int]) -> tuple[int, ...]:
        return tuple((s + b + a - d * (k - 1) - 1) // st + 1 for s, b, a, d, k, st in
                     zip(spatial, self.pad_before, self.pad_after, self.dilation, self.kernel, self.strides))

    def out_type(self, args: Sequence[TensorType]) -> TensorType:
        return TensorType(int(self.connectivity.shape[0]), self.out_spatial(args[0].spatial))

    def params(self) -> dict[str, Param]:
        live = self.connectivity.reshape(self.connectivity.shape[0], -1).sum(axis=1)
        fan_in = max(1.0, float(live.mean()))
        out = {"weight": Param(tuple(self.connectivity.shape), "normal", 1.0 / fan_in ** 0.5)}
        if self.bias:
            out["bias"] = Param((int(self.connectivity.shape[0]),), "zeros")
        return out

    def buffers(self) -> dict[str, np.ndarray]:
        return {"mask": self.connectivity}

    def attrs(self) -> dict[str, Any]:
        return {"dilation": tuple(self.dilation), "pad_before": tuple(self.pad_before),
                "pad_after": tuple(self.pad_after), "stride": tuple(self.strides)}

    def footprint(self, args: Sequence[Deps], out: TensorType, mask: int) -> Deps:
        return args[0].conv(self.connectivity, self.dilation, self.pad_before, out.spatial, stride=self.stride)

    def taps(self, rank: int, arguments: int) -> list[Taps] | None:
        if any(s != 1 for s in self.strides):
            return None
        used = np.any(self.connectivity, axis=(0, 1))
        taps = list(np.ndindex(*self.kernel))
        offsets = tuple(tuple(int(t) * d - b for t, d, b in zip(tap, self.dilation, self.pad_before)) for tap in taps)
        return [Taps(offsets, tuple(bool(used[tap]) for tap in taps))]

    def step(self, b: StepBuilder) -> int | None:
        """Its live taps gathered (offset-major), times the masked weight's columns of those taps.
        None for a strided convolution (not position-local) or one whose mask leaves no tap."""
        taps = self.taps(b.rank, 1)
        if taps is None or not any(taps[0].live):
            return None
        live = [k for k, used in enumerate(taps[0].live) if used]
        gathered = b.gather(0, [taps[0].offsets[k] for k in live])
        return b.product([gathered], "weight", int(self.connectivity.shape[0]), mask="mask", bias="bias" if self.bias else "",
                         taps=live)
