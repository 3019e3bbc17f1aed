"""shift — move a tensor along its spatial axes, filling with zeros.

`by: [1, 0]` moves an image down one row (the vertical-stack shift of Gated PixelCNN);
`by: [1]` delays a sequence by one step (the input shift that makes WaveNet strictly causal)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from arspec.ops.base import LowerContext, NodeSpec, Op, ShapeError
from arspec.ops.registry import register_op
from arspec.primitives import Shift
from arspec.primitives.program import ProgramBuilder, Value
from arspec.types import TensorType


class ShiftSpec(NodeSpec):
    op: Literal["shift"]
    by: list[int] = Field(description="Steps to move along each spatial axis (positive: towards higher indices).")


@register_op
class ShiftOp(Op):
    name = "shift"
    Spec = ShiftSpec

    def infer(self, spec: ShiftSpec, inputs: Sequence[TensorType], ctx: LowerContext) -> tuple[TensorType, dict[str, Any]]:
        inp = inputs[0]
        if len(spec.by) != len(inp.spatial):
            raise ShapeError(f"'by' needs one value per spatial axis ({len(inp.spatial)}), got {spec.by}", "by")
        return TensorType(inp.channels, inp.spatial), {}

    def semantics(self, spec: ShiftSpec, attrs: dict[str, Any], b: ProgramBuilder, inputs: Sequence[Value], ctx: LowerContext) -> Value:
        return b.call("shift", Shift(tuple(spec.by)), inputs[0])
