"""layer_norm — normalise each position's channels (per channel group: R→G→B stays ordered),
with a learned scale and shift per channel, as in transformer blocks."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from arspec.ops.base import LowerContext, Op, ShapeError
from arspec.ops.masks import GroupedMaskSpec, groups_of
from arspec.ops.registry import register_op
from arspec.primitives import ChannelNorm
from arspec.primitives.program import ProgramBuilder, Value
from arspec.types import TensorType


class LayerNormSpec(GroupedMaskSpec):
    op: Literal["layer_norm"]


@register_op
class LayerNorm(Op):
    name = "layer_norm"
    Spec = LayerNormSpec

    def infer(self, spec: LayerNormSpec, inputs: Sequence[TensorType], ctx: LowerContext) -> tuple[TensorType, dict[str, Any]]:
        channels, groups = inputs[0].channels, groups_of(spec, ctx) if inputs[0].spatial else 1
        if channels % groups or channels // groups < 2:
            raise ShapeError(f"layer_norm needs at least 2 channels per channel group ({groups} groups), got {channels}", "inputs")
        return TensorType(channels, inputs[0].spatial), {}

    def semantics(self, spec: LayerNormSpec, attrs: dict[str, Any], b: ProgramBuilder, inputs: Sequence[Value], ctx: LowerContext) -> Value:
        groups = groups_of(spec, ctx) if inputs[0].type.spatial else 1
        return b.call("norm", ChannelNorm(inputs[0].type.channels, groups), inputs[0])
