"""conv1x1 — a per-position linear map across channels, optionally masked by channel group.

In R→G→B models every 1x1 layer on the data path needs mask B (or A), or it mixes later colour
channels into earlier ones."""
from __future__ import annotations

from typing import Literal

from arspec.ops.base import output_channels
from arspec.ops.convolution import ConvOp
from arspec.ops.fields import LayerSpec
from arspec.ops.masks import GroupedMaskSpec, group_connectivity, groups_of
from arspec.ops.registry import register_op
from arspec.primitives import MaskedConv


class Conv1x1Spec(GroupedMaskSpec, LayerSpec):
    op: Literal["conv1x1"]
    mask: Literal["none", "A", "B"] = "none"


@register_op
class Conv1x1(ConvOp):
    name = "conv1x1"
    Spec = Conv1x1Spec

    def geometry(self, spec: Conv1x1Spec, inp, ctx) -> MaskedConv:
        rank = len(inp.spatial)
        conn = group_connectivity(output_channels(spec.channels, ctx), inp.channels, groups_of(spec, ctx), spec.mask)
        zero = (0,) * rank
        return MaskedConv(conn.reshape(conn.shape + (1,) * rank), (1,) * rank, zero, zero, bias=spec.bias)
