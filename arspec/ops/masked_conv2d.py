"""masked_conv2d — PixelCNN's masked convolution (van den Oord et al. 2016).

Mask A (first layer) hides the current element; mask B (later layers) lets each channel group read
its own group at the current position. Channel groups give the R→G→B order within a pixel."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from arspec.ops.base import output_channels
from arspec.ops.convolution import ConvOp
from arspec.ops.fields import Dilation, KernelSize, LayerSpec, kernel_tuple, odd_kernel
from arspec.ops.masks import GroupedMaskSpec, groups_of, raster_kernel_mask
from arspec.ops.registry import register_op
from arspec.primitives import MaskedConv


class MaskedConv2dSpec(GroupedMaskSpec, LayerSpec):
    op: Literal["masked_conv2d"]
    kernel: KernelSize | list[KernelSize] = Field(description="Odd kernel size (or [height, width]).")
    mask: Literal["A", "B"] = Field(description="A hides the current element (first layer); B lets a group see itself.")
    dilation: Dilation = 1


@register_op
class MaskedConv2d(ConvOp):
    name = "masked_conv2d"
    Spec = MaskedConv2dSpec
    spatial_rank = 2
    framewise = True

    def geometry(self, spec: MaskedConv2dSpec, inp, ctx) -> MaskedConv:
        kernel = odd_kernel(kernel_tuple(spec.kernel, 2), self.name)
        conn = raster_kernel_mask(kernel, output_channels(spec.channels, ctx), inp.channels, groups_of(spec, ctx), spec.mask)
        pad = tuple(spec.dilation * (k // 2) for k in kernel)
        return MaskedConv(conn, (spec.dilation,) * 2, pad, pad, bias=spec.bias)
