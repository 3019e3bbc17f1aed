"""vertical_conv2d / horizontal_conv2d — the two stacks of Gated PixelCNN (van den Oord et al. 2016).

The vertical stack reads the k//2 rows above *and the current row* (all k columns); it must be
shifted down one row (op `shift`, by [1, 0]) before it feeds the horizontal stack. The horizontal
stack reads the current row up to the current column, whose channel groups obey mask A or B."""
from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from arspec.ops.base import Channels, KernelSize, Activation, LowerContext, NodeSpec, ShapeError, TensorType, output_channels, register_op
from arspec.ops.convolution import ConvGeometry, ConvOp
from arspec.ops.masks import GroupedMaskSpec, group_connectivity, groups_of


class VerticalConv2dSpec(NodeSpec):
    op: Literal["vertical_conv2d"]
    channels: Channels
    kernel: int = Field(3, ge=1, le=1025, description="Odd width k; the kernel covers k//2+1 rows x k columns.")
    dilation: int = Field(1, ge=1, le=4096)
    activation: Activation = "none"
    bias: bool = True


class HorizontalConv2dSpec(GroupedMaskSpec):
    op: Literal["horizontal_conv2d"]
    channels: Channels
    kernel: int = Field(3, ge=1, le=1025, description="Odd width k; the kernel covers 1 row x k//2+1 columns.")
    mask: Literal["A", "B"] = "B"
    dilation: int = Field(1, ge=1, le=4096)
    activation: Activation = "none"
    bias: bool = True


def _odd(k: int) -> None:
    if k % 2 == 0:
        raise ShapeError(f"kernel must be odd, got {k}", "kernel")


@register_op
class VerticalConv2d(ConvOp):
    name = "vertical_conv2d"
    Spec = VerticalConv2dSpec
    spatial_rank = 2

    def geometry(self, spec: VerticalConv2dSpec, inp: TensorType, ctx: LowerContext) -> ConvGeometry:
        _odd(spec.kernel)
        half = spec.kernel // 2
        channels = output_channels(spec.channels, ctx)
        conn = np.ones((channels, inp.channels, half + 1, spec.kernel), dtype=bool)
        d = spec.dilation
        return ConvGeometry(conn, (d, d), (d * half, d * half), (0, d * half))

    def parameter_count(self, spec, attrs, inputs, out):
        return out.channels * inputs[0].channels * (spec.kernel // 2 + 1) * spec.kernel + out.channels


@register_op
class HorizontalConv2d(ConvOp):
    name = "horizontal_conv2d"
    Spec = HorizontalConv2dSpec
    spatial_rank = 2

    def geometry(self, spec: HorizontalConv2dSpec, inp: TensorType, ctx: LowerContext) -> ConvGeometry:
        _odd(spec.kernel)
        half = spec.kernel // 2
        channels = output_channels(spec.channels, ctx)
        conn = np.ones((channels, inp.channels, 1, half + 1), dtype=bool)
        conn[:, :, 0, half] = group_connectivity(channels, inp.channels, groups_of(spec, ctx), spec.mask)
        d = spec.dilation
        return ConvGeometry(conn, (d, d), (0, d * half), (0, 0))

    def parameter_count(self, spec, attrs, inputs, out):
        return out.channels * inputs[0].channels * (spec.kernel // 2 + 1) + out.channels
