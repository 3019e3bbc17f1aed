"""masked_conv2d — PixelCNN's masked convolution (van den Oord et al. 2016).

Mask A (first layer) hides the current element; mask B (later layers) lets each channel group read
its own group at the current position. Channel groups give the R→G→B order within a pixel."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from arspec.ops.base import Channels, KernelSize, Activation, LowerContext, NodeSpec, ShapeError, TensorType, output_channels, register_op
from arspec.ops.convolution import ConvGeometry, ConvOp, kernel_tuple
from arspec.ops.masks import GroupedMaskSpec, raster_kernel_mask, groups_of


class MaskedConv2dSpec(GroupedMaskSpec):
    op: Literal["masked_conv2d"]
    channels: Channels = Field(description="Output channels, or 'output' for the distribution head.")
    kernel: KernelSize | list[KernelSize] = Field(description="Odd kernel size (or [height, width]).")
    mask: Literal["A", "B"] = Field(description="A hides the current element (first layer); B lets a group see itself.")
    dilation: int = Field(1, ge=1, le=4096)
    activation: Activation = "none"
    bias: bool = True


@register_op
class MaskedConv2d(ConvOp):
    name = "masked_conv2d"
    Spec = MaskedConv2dSpec
    spatial_rank = 2

    def geometry(self, spec: MaskedConv2dSpec, inp: TensorType, ctx: LowerContext) -> ConvGeometry:
        kernel = kernel_tuple(spec.kernel, 2)
        if any(k % 2 == 0 or k < 1 or k > 1025 for k in kernel):
            raise ShapeError(f"masked_conv2d needs odd kernel sizes, got {list(kernel)}", "kernel")
        channels = output_channels(spec.channels, ctx)
        conn = raster_kernel_mask(kernel, channels, inp.channels, groups_of(spec, ctx), spec.mask)
        pad = tuple(spec.dilation * (k // 2) for k in kernel)
        return ConvGeometry(conn, (spec.dilation,) * 2, pad, pad)
