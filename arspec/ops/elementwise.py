"""Elementwise ops: activations, add, multiply, concat and the gated unit.

They never mix positions, so their footprint is the union of their inputs' (per channel)."""
from __future__ import annotations

from typing import Any, Literal, Sequence

import numpy as np

from arspec.ops.base import LowerContext, NodeSpec, Op, ShapeError, TensorType, register_op
from arspec.runtime.layers import Elementwise, GatedTanh


class UnarySpec(NodeSpec):
    op: Literal["relu", "elu", "tanh", "sigmoid", "identity"]


class MergeSpec(NodeSpec):
    op: Literal["add", "multiply", "concat"]


class GatedTanhSpec(NodeSpec):
    op: Literal["gated_tanh"]


class _Unary(Op):
    Spec = UnarySpec

    def infer(self, spec, inputs, ctx):
        return TensorType(inputs[0].channels, inputs[0].spatial, inputs[0].degrees), {}

    def footprint(self, spec, attrs, inputs, out, mask):
        return inputs[0]

    def build(self, spec, attrs, inputs, out, ctx):
        return Elementwise(self.name)


for _name in ("relu", "elu", "tanh", "sigmoid", "identity"):
    register_op(type(f"Unary_{_name}", (_Unary,), {"name": _name}))


class _Merge(Op):
    Spec = MergeSpec
    min_inputs = 2
    max_inputs = None

    def infer(self, spec, inputs: Sequence[TensorType], ctx: LowerContext) -> tuple[TensorType, dict[str, Any]]:
        first = inputs[0]
        for t in inputs[1:]:
            if t.spatial != first.spatial:
                raise ShapeError(f"{self.name} needs inputs of the same spatial shape, got {list(first.spatial)} and {list(t.spatial)}", "inputs")
            if self.name != "concat" and t.channels != first.channels:
                raise ShapeError(f"{self.name} needs inputs with the same channels, got {first.channels} and {t.channels}", "inputs")
        channels = sum(t.channels for t in inputs) if self.name == "concat" else first.channels
        return TensorType(channels, first.spatial), {}

    def footprint(self, spec, attrs, inputs, out, mask):
        if self.name == "concat":
            return inputs[0].concat(inputs[1:])
        acc = inputs[0]
        for d in inputs[1:]:
            acc = acc.union(d)
        return acc

    def build(self, spec, attrs, inputs, out, ctx):
        return Elementwise(self.name)


for _name in ("add", "multiply", "concat"):
    register_op(type(f"Merge_{_name}", (_Merge,), {"name": _name}))


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

    def footprint(self, spec, attrs, inputs, out, mask):
        half = out.channels
        return inputs[0].select(np.arange(half)).union(inputs[0].select(np.arange(half, 2 * half)))

    def build(self, spec, attrs, inputs, out, ctx):
        return GatedTanh()
