"""The op behind a local conditioning input: its feature map upsampled to the event's resolution.
It is created by lowering from the `conditioning` section, not written in a graph."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from arspec.ops.base import LowerContext, Op
from arspec.primitives import Upsample
from arspec.primitives.program import ProgramBuilder, Value
from arspec.types import TensorType


class ContextUpsampleOp(Op):
    name = "upsample"

    def __init__(self, channels: int, factor: int, mode: str) -> None:
        self.primitive = Upsample(channels, factor, mode)  # type: ignore[arg-type]

    def infer(self, spec: Any, inputs: Sequence[TensorType], ctx: LowerContext) -> tuple[TensorType, dict[str, Any]]:
        return self.primitive.out_type(inputs), {}

    def semantics(self, spec: Any, attrs: dict[str, Any], b: ProgramBuilder, inputs: Sequence[Value], ctx: LowerContext) -> Value:
        return b.call("upsample", self.primitive, inputs[0])
