"""group_masked_conv2d — a convolution over channel groups generated one after another at every
position (the sub-position groups of multiscale PixelCNN, Reed et al. 2017).

After `space_to_depth`, each position of a coarse grid holds f² groups (top-left, top-right,
bottom-left, bottom-right) and a whole group is generated in one step, given all earlier groups
everywhere. So, unlike a raster mask, the group mask applies to *every* tap: with mask A, group g
reads groups before g (the first layer); with mask B it also reads its own group's features."""
from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from arspec.ops.base import ShapeError, output_channels
from arspec.ops.convolution import ConvOp
from arspec.ops.fields import Channels, Dilation, KernelSize, LayerSpec, kernel_tuple, odd_kernel
from arspec.ops.masks import group_connectivity
from arspec.ops.registry import register_op
from arspec.primitives import MaskedConv


class GroupMaskedConv2dSpec(LayerSpec):
    op: Literal["group_masked_conv2d"]
    channels: Channels = Field(description="Output channels, or 'output': the distribution parameters of every group (P × C × groups).")
    groups: int = Field(4, ge=1, le=4096, description="Interleaved channel groups (channel mod groups), in generation order.")
    kernel: KernelSize | list[KernelSize] = Field(3, description="Odd kernel size (or [height, width]); 'same' padding.")
    mask: Literal["A", "B"] = Field(description="A: group g reads earlier groups only (first layer); B: also its own.")
    dilation: Dilation = 1


@register_op
class GroupMaskedConv2d(ConvOp):
    name = "group_masked_conv2d"
    Spec = GroupMaskedConv2dSpec
    spatial_rank = 2

    def geometry(self, spec: GroupMaskedConv2dSpec, inp, ctx) -> MaskedConv:
        kernel = odd_kernel(kernel_tuple(spec.kernel, 2), self.name)
        if inp.channels % spec.groups:
            raise ShapeError(f"{inp.channels} input channels do not split into {spec.groups} groups", "groups")
        channels = output_channels(spec.channels, ctx) * (spec.groups if spec.channels == "output" else 1)
        if channels % spec.groups:
            raise ShapeError(f"{channels} output channels do not split into {spec.groups} groups", "channels")
        per_tap = group_connectivity(channels, inp.channels, spec.groups, spec.mask)
        conn = np.broadcast_to(per_tap[:, :, None, None], per_tap.shape + kernel).copy()
        pad = tuple(spec.dilation * (k // 2) for k in kernel)
        return MaskedConv(conn, (spec.dilation,) * 2, pad, pad, bias=spec.bias)
