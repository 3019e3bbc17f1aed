"""linear — an unmasked fully connected layer over everything its input holds (flattened), for
order-agnostic models (deep NADE), where the data gate, not a weight mask, keeps the model
autoregressive. `features: output` gives the distribution parameters of every element."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field

from arspec.ops.base import LowerContext, NodeSpec, Op, ShapeError
from arspec.ops.fields import Activation
from arspec.ops.registry import register_op
from arspec.primitives import MaskedDense
from arspec.primitives.program import ProgramBuilder, Value
from arspec.types import TensorType

MAX_DENSE_WEIGHTS = 200_000_000


class LinearSpec(NodeSpec):
    op: Literal["linear"]
    features: Annotated[int, Field(ge=1, le=10_000_000)] | Literal["output"] = Field(description="Units, or 'output' for the distribution head.")
    activation: Activation = "none"
    bias: bool = True


@register_op
class LinearOp(Op):
    name = "linear"
    Spec = LinearSpec

    def infer(self, spec: LinearSpec, inputs: Sequence[TensorType], ctx: LowerContext) -> tuple[TensorType, dict[str, Any]]:
        units = inputs[0].numel
        features = ctx.params_per_element * ctx.elements if spec.features == "output" else spec.features
        if features * units > MAX_DENSE_WEIGHTS:
            raise ShapeError(f"layer too large: {features:,} x {units:,} weights", "features")
        if spec.features == "output" and spec.activation != "none":
            raise ShapeError("the output layer must not have an activation (it produces distribution parameters)", "activation")
        # every unit of degree 0 reads every input of degree 0: a full connection
        dense = MaskedDense(np.zeros((1, units), dtype=np.int64), np.zeros((1, features), dtype=np.int64), strict=False, bias=spec.bias)
        return TensorType(features, ()), {"dense": dense}

    def semantics(self, spec: LinearSpec, attrs: dict[str, Any], b: ProgramBuilder, inputs: Sequence[Value], ctx: LowerContext) -> Value:
        return b.call("dense", attrs["dense"], inputs[0])
