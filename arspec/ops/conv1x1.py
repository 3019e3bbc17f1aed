"""conv1x1 — a per-position linear map across channels, optionally masked by channel group.

In R→G→B models every 1x1 layer on the data path needs mask B (or A), or it mixes later colour
channels into earlier ones."""
from __future__ import annotations

from typing import Literal

import numpy as np

from arspec.ops.base import Channels, KernelSize, Activation, LowerContext, NodeSpec, TensorType, output_channels, register_op
from arspec.ops.convolution import ConvGeometry, ConvOp
from arspec.ops.masks import GroupedMaskSpec, group_connectivity, groups_of


class Conv1x1Spec(GroupedMaskSpec):
    op: Literal["conv1x1"]
    channels: Channels
    mask: Literal["none", "A", "B"] = "none"
    activation: Activation = "none"
    bias: bool = True


@register_op
class Conv1x1(ConvOp):
    name = "conv1x1"
    Spec = Conv1x1Spec

    def geometry(self, spec: Conv1x1Spec, inp: TensorType, ctx: LowerContext) -> ConvGeometry:
        rank = len(inp.spatial)
        channels = output_channels(spec.channels, ctx)
        conn = group_connectivity(channels, inp.channels, groups_of(spec, ctx), spec.mask)
        conn = conn.reshape(conn.shape + (1,) * rank)
        zero = (0,) * rank
        return ConvGeometry(conn, (1,) * rank, zero, zero)

    def parameter_count(self, spec, attrs, inputs, out):
        return out.channels * inputs[0].channels + out.channels
