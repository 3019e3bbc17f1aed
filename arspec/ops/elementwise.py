"""Elementwise ops: activations, add, multiply, concat and the gated unit. They never mix
positions, so each is one pointwise primitive."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from arspec.ops.base import LowerContext, NodeSpec, Op, ShapeError
from arspec.ops.registry import register_op
from arspec.primitives import Activation, Add, Concat, Dropout, Gate, Multiply
from arspec.primitives.program import ProgramBuilder, Value
from arspec.types import TensorType


class UnarySpec(NodeSpec):
    op: Literal["relu", "elu", "tanh", "sigmoid", "identity"]


class MergeSpec(NodeSpec):
    op: Literal["add", "multiply", "concat"]


class GatedTanhSpec(NodeSpec):
    op: Literal["gated_tanh"]


class DropoutSpec(NodeSpec):
    op: Literal["dropout"]
    p: float = Field(0.5, ge=0.0, lt=1.0, description="Probability of zeroing a value while training (none in eval mode).")


class _Unary(Op):
    Spec = UnarySpec

    def infer(self, spec, inputs, ctx):
        return TensorType(inputs[0].channels, inputs[0].spatial, inputs[0].degrees), {}

    def semantics(self, spec, attrs, b: ProgramBuilder, inputs: Sequence[Value], ctx: LowerContext) -> Value:
        return b.call(self.name, Activation(self.name), inputs[0])  # type: ignore[arg-type]


for _name in ("relu", "elu", "tanh", "sigmoid", "identity"):
    register_op(type(f"Unary_{_name}", (_Unary,), {"name": _name}))


class _Merge(Op):
    Spec = MergeSpec
    min_inputs = 2
    max_inputs = None
    primitive: Any = Add

    def infer(self, spec, inputs: Sequence[TensorType], ctx: LowerContext) -> tuple[TensorType, dict[str, Any]]:
        first = inputs[0]
        for t in inputs[1:]:
            if t.spatial != first.spatial:
                raise ShapeError(f"{self.name} needs inputs of the same spatial shape, got {list(first.spatial)} and {list(t.spatial)}", "inputs")
            if self.name != "concat" and t.channels != first.channels:
                raise ShapeError(f"{self.name} needs inputs with the same channels, got {first.channels} and {t.channels}", "inputs")
        channels = sum(t.channels for t in inputs) if self.name == "concat" else first.channels
        return TensorType(channels, first.spatial), {}

    def semantics(self, spec, attrs, b: ProgramBuilder, inputs: Sequence[Value], ctx: LowerContext) -> Value:
        return b.call(self.name, self.primitive(), *inputs)


for _name, _primitive in (("add", Add), ("multiply", Multiply), ("concat", Concat)):
    register_op(type(f"Merge_{_name}", (_Merge,), {"name": _name, "primitive": _primitive}))


@register_op
class GatedTanhOp(Op):
    """tanh(a) * sigmoid(b) over the channel halves [a, b]."""

    name = "gated_tanh"
    Spec = GatedTanhSpec

    def infer(self, spec, inputs, ctx):
        c = inputs[0].channels
        if c % 2:
            raise ShapeError(f"gated_tanh needs an even number of channels, got {c}", "inputs")
        return TensorType(c // 2, inputs[0].spatial), {}

    def semantics(self, spec, attrs, b: ProgramBuilder, inputs: Sequence[Value], ctx: LowerContext) -> Value:
        return b.call("gate", Gate(), inputs[0])


@register_op
class DropoutOp(Op):
    """Dropout (PixelCNN++ uses it in its residual blocks); elementwise for the verifier."""

    name = "dropout"
    Spec = DropoutSpec

    def infer(self, spec, inputs, ctx):
        return TensorType(inputs[0].channels, inputs[0].spatial, inputs[0].degrees), {}

    def semantics(self, spec, attrs, b: ProgramBuilder, inputs: Sequence[Value], ctx: LowerContext) -> Value:
        return b.call("dropout", Dropout(spec.p), inputs[0])
