"""flatten — a tensor (C, *S) as one vector of units (C order), e.g. a convolutional head joined to
a dense one (ConvNADE adds its convolutions' output to a deep-NADE MLP's)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from arspec.ops.base import LowerContext, NodeSpec, Op, ShapeError
from arspec.ops.registry import register_op
from arspec.primitives import Flatten
from arspec.primitives.program import ProgramBuilder, Value
from arspec.types import TensorType


class FlattenSpec(NodeSpec):
    op: Literal["flatten"]


@register_op
class FlattenOp(Op):
    name = "flatten"
    Spec = FlattenSpec
    moves_only = True

    def infer(self, spec: FlattenSpec, inputs: Sequence[TensorType], ctx: LowerContext) -> tuple[TensorType, dict[str, Any]]:
        if not inputs[0].spatial:
            raise ShapeError("flatten needs an input with positions; this one is a vector already", "inputs")
        return TensorType(inputs[0].numel, ()), {}

    def semantics(self, spec: FlattenSpec, attrs: dict[str, Any], b: ProgramBuilder, inputs: Sequence[Value], ctx: LowerContext) -> Value:
        return b.call("flatten", Flatten(), inputs[0])
