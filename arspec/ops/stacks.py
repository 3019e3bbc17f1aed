"""vertical_conv2d / horizontal_conv2d — the two stacks of Gated PixelCNN (van den Oord et al. 2016).

The vertical stack reads the k//2 rows above *and the current row* (all k columns); it must be
shifted down one row (op `shift`, by [1, 0]) before it feeds the horizontal stack. The horizontal
stack reads the current row up to the current column, whose channel groups obey mask A or B."""
from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from arspec.ops.base import output_channels
from arspec.ops.convolution import ConvOp
from arspec.ops.fields import Dilation, LayerSpec, odd_kernel
from arspec.ops.masks import GroupedMaskSpec, group_connectivity, groups_of
from arspec.ops.registry import register_op
from arspec.primitives import MaskedConv


class VerticalConv2dSpec(LayerSpec):
    op: Literal["vertical_conv2d"]
    kernel: int = Field(3, ge=1, le=1025, description="Odd width k; the kernel covers k//2+1 rows x k columns.")
    dilation: Dilation = 1


class HorizontalConv2dSpec(GroupedMaskSpec, LayerSpec):
    op: Literal["horizontal_conv2d"]
    kernel: int = Field(3, ge=1, le=1025, description="Odd width k; the kernel covers 1 row x k//2+1 columns.")
    mask: Literal["A", "B"] = "B"
    dilation: Dilation = 1


@register_op
class VerticalConv2d(ConvOp):
    name = "vertical_conv2d"
    Spec = VerticalConv2dSpec
    spatial_rank = 2
    framewise = True

    def geometry(self, spec: VerticalConv2dSpec, inp, ctx) -> MaskedConv:
        odd_kernel((spec.kernel,), self.name)
        half, d = spec.kernel // 2, spec.dilation
        conn = np.ones((output_channels(spec.channels, ctx), inp.channels, half + 1, spec.kernel), dtype=bool)
        return MaskedConv(conn, (d, d), (d * half, d * half), (0, d * half), bias=spec.bias)

    def requires_shift(self, spec: VerticalConv2dSpec) -> tuple[int, ...] | None:
        return (1, 0)


@register_op
class HorizontalConv2d(ConvOp):
    name = "horizontal_conv2d"
    Spec = HorizontalConv2dSpec
    spatial_rank = 2
    framewise = True

    def geometry(self, spec: HorizontalConv2dSpec, inp, ctx) -> MaskedConv:
        odd_kernel((spec.kernel,), self.name)
        half, d = spec.kernel // 2, spec.dilation
        channels = output_channels(spec.channels, ctx)
        conn = np.ones((channels, inp.channels, 1, half + 1), dtype=bool)
        conn[:, :, 0, half] = group_connectivity(channels, inp.channels, groups_of(spec, ctx), spec.mask)
        return MaskedConv(conn, (d, d), (0, d * half), (0, 0), bias=spec.bias)
