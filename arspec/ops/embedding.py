"""embedding — a learned vector per class of each data element (WaveNet's input layer).

Reads x as class indices. `shift: 1` delays the result one step along the last axis so that
position t sees only x[<t]; without it the first layer sees the element it predicts."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from arspec.ops.base import LowerContext, NodeSpec, Op, ShapeError
from arspec.ops.fields import MAX_CHANNELS
from arspec.ops.registry import register_op
from arspec.primitives import Embedding, Shift
from arspec.primitives.program import ProgramBuilder, Value
from arspec.types import TensorType


class EmbeddingSpec(NodeSpec):
    op: Literal["embedding"]
    channels: int = Field(ge=1, le=MAX_CHANNELS)
    shift: int = Field(0, ge=0, description="Delay along the last axis (1 makes a sequence model strictly causal).")


@register_op
class EmbeddingOp(Op):
    name = "embedding"
    Spec = EmbeddingSpec

    def infer(self, spec: EmbeddingSpec, inputs: Sequence[TensorType], ctx: LowerContext) -> tuple[TensorType, dict[str, Any]]:
        inp = inputs[0]
        if ctx.classes is None:
            raise ShapeError("embedding needs a discrete distribution (categorical or discretized_logistic_mixture)", "op")
        if not inp.spatial:
            raise ShapeError("embedding needs the data x as its input", "inputs")
        return TensorType(spec.channels, inp.spatial), {}

    def semantics(self, spec: EmbeddingSpec, attrs: dict[str, Any], b: ProgramBuilder, inputs: Sequence[Value], ctx: LowerContext) -> Value:
        assert ctx.classes is not None
        out = b.call("embed", Embedding(inputs[0].type.channels, ctx.classes, spec.channels), inputs[0])
        if spec.shift:
            out = b.call("shift", Shift((0,) * (len(out.type.spatial) - 1) + (spec.shift,)), out)
        return out
