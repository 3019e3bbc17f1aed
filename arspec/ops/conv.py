"""conv1d / conv2d / causal_conv1d — unmasked convolutions with explicit padding.

`causal` padding pads only the past (WaveNet: causality by shifting, never by symmetric padding and
cropping); `same` pads both sides and therefore sees the future — the verifier reports that.
`valid` shrinks by the kernel's reach and `full` grows by it (ConvNADE's shrinking then growing
stacks, over order-agnostic inputs)."""
from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from arspec.ops.base import LowerContext, ShapeError, output_channels
from arspec.ops.convolution import ConvOp
from arspec.ops.fields import Dilation, KernelSize, LayerSpec, kernel_tuple
from arspec.ops.registry import register_op
from arspec.primitives import MaskedConv
from arspec.types import TensorType

Padding = Literal["causal", "same", "valid", "full"] | list[int]


class ConvSpec(LayerSpec):
    kernel: KernelSize | list[KernelSize] = 1
    dilation: Dilation | list[Dilation] = 1
    padding: Padding = Field("same", description="causal | same | valid | full | explicit [before, after] per axis.")


class Conv1dSpec(ConvSpec):
    op: Literal["conv1d"]


class CausalConv1dSpec(ConvSpec):
    op: Literal["causal_conv1d"]
    padding: Padding = "causal"


class Conv2dSpec(ConvSpec):
    op: Literal["conv2d"]


def padding_of(padding: Padding, reach: list[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Zero padding (before, after) per axis for a kernel that reaches `reach` positions."""
    rank = len(reach)
    if padding == "causal":
        return tuple(reach), (0,) * rank
    if padding == "same":
        return tuple(r // 2 for r in reach), tuple(r - r // 2 for r in reach)
    if padding == "valid":
        return (0,) * rank, (0,) * rank
    if padding == "full":
        return tuple(reach), tuple(reach)
    if len(padding) != 2 * rank or any(p < 0 for p in padding):
        raise ShapeError(f"explicit padding needs {2 * rank} non-negative values [before, after per axis]", "padding")
    return tuple(padding[0::2]), tuple(padding[1::2])


def unmasked_conv(spec: ConvSpec, inp: TensorType, ctx: LowerContext, rank: int) -> MaskedConv:
    kernel = kernel_tuple(spec.kernel, rank)
    dilation = tuple(spec.dilation) if isinstance(spec.dilation, list) else (spec.dilation,) * rank
    if len(dilation) != rank:
        raise ShapeError(f"dilation needs {rank} values, got {spec.dilation}", "dilation")
    before, after = padding_of(spec.padding, [d * (k - 1) for d, k in zip(dilation, kernel)])
    conn = np.ones((output_channels(spec.channels, ctx), inp.channels) + kernel, dtype=bool)
    return MaskedConv(conn, dilation, before, after, bias=spec.bias)


@register_op
class Conv1d(ConvOp):
    name = "conv1d"
    Spec = Conv1dSpec
    spatial_rank = 1

    def geometry(self, spec, inp, ctx):
        return unmasked_conv(spec, inp, ctx, 1)


@register_op
class CausalConv1d(Conv1d):
    name = "causal_conv1d"
    Spec = CausalConv1dSpec  # type: ignore[assignment]


@register_op
class Conv2d(ConvOp):
    name = "conv2d"
    Spec = Conv2dSpec
    spatial_rank = 2
    framewise = True

    def geometry(self, spec, inp, ctx):
        return unmasked_conv(spec, inp, ctx, 2)
