"""conv1d / conv2d / causal_conv1d — unmasked convolutions with explicit padding.

`causal` padding pads only the past (WaveNet: causality by shifting, never by symmetric padding and
cropping); `same` pads both sides and therefore sees the future — the verifier reports that."""
from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from arspec.ops.base import Channels, KernelSize, Activation, LowerContext, NodeSpec, ShapeError, TensorType, output_channels, register_op
from arspec.ops.convolution import ConvGeometry, ConvOp, kernel_tuple

Padding = Literal["causal", "same", "valid"] | list[int]


class ConvSpec(NodeSpec):
    channels: Channels
    kernel: KernelSize | list[KernelSize] = 1
    dilation: Annotated[int, Field(ge=1, le=4096)] | list[Annotated[int, Field(ge=1, le=4096)]] = 1
    padding: Padding = Field("same", description="causal | same | valid | explicit [before, after] per axis.")
    activation: Activation = "none"
    bias: bool = True


class Conv1dSpec(ConvSpec):
    op: Literal["conv1d"]


class CausalConv1dSpec(ConvSpec):
    op: Literal["causal_conv1d"]
    padding: Padding = "causal"


class Conv2dSpec(ConvSpec):
    op: Literal["conv2d"]


def _geometry(spec: ConvSpec, inp: TensorType, ctx: LowerContext, rank: int) -> ConvGeometry:
    kernel = kernel_tuple(spec.kernel, rank)
    if any(k < 1 or k > 4096 for k in kernel):
        raise ShapeError(f"kernel sizes must be in 1..4096, got {list(kernel)}", "kernel")
    dilation = tuple(spec.dilation) if isinstance(spec.dilation, list) else (spec.dilation,) * rank
    if len(dilation) != rank or any(d < 1 for d in dilation):
        raise ShapeError(f"dilation needs {rank} positive values, got {spec.dilation}", "dilation")
    reach = [d * (k - 1) for d, k in zip(dilation, kernel)]
    if spec.padding == "causal":
        before, after = tuple(reach), (0,) * rank
    elif spec.padding == "same":
        before = tuple(r // 2 for r in reach)
        after = tuple(r - r // 2 for r in reach)
    elif spec.padding == "valid":
        before = after = (0,) * rank
    else:
        if len(spec.padding) != 2 * rank or any(p < 0 for p in spec.padding):
            raise ShapeError(f"explicit padding needs {2 * rank} non-negative values [before, after per axis]", "padding")
        before, after = tuple(spec.padding[0::2]), tuple(spec.padding[1::2])
    channels = output_channels(spec.channels, ctx)
    conn = np.ones((channels, inp.channels) + kernel, dtype=bool)
    return ConvGeometry(conn, dilation, before, after)


@register_op
class Conv1d(ConvOp):
    name = "conv1d"
    Spec = Conv1dSpec
    spatial_rank = 1

    def geometry(self, spec, inp, ctx):
        return _geometry(spec, inp, ctx, 1)


@register_op
class CausalConv1d(Conv1d):
    name = "causal_conv1d"
    Spec = CausalConv1dSpec


@register_op
class Conv2d(ConvOp):
    name = "conv2d"
    Spec = Conv2dSpec
    spatial_rank = 2

    def geometry(self, spec, inp, ctx):
        return _geometry(spec, inp, ctx, 2)
