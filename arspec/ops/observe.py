"""observe — the data gate of order-agnostic models: `{op: observe, inputs: [x]}` is x times the
graph input `observed` (1 where an element is given). Under `ordering: {type: agnostic}` the
network may read the data only through such gates, and usually reads `observed` too (concatenated
beside the gate, so that an observed 0 differs from a missing element)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from arspec.ops.base import LowerContext, NodeSpec, Op
from arspec.ops.registry import register_op
from arspec.ordering import OBSERVED
from arspec.primitives import ObserveGate
from arspec.primitives.program import ProgramBuilder, Value
from arspec.types import TensorType


class ObserveSpec(NodeSpec):
    op: Literal["observe"]


@register_op
class ObserveOp(Op):
    name = "observe"
    Spec = ObserveSpec
    reads_data_only = True

    def extra_inputs(self, spec: ObserveSpec) -> list[str]:
        return [OBSERVED]

    def infer(self, spec: ObserveSpec, inputs: Sequence[TensorType], ctx: LowerContext) -> tuple[TensorType, dict[str, Any]]:
        return TensorType(inputs[0].channels, inputs[0].spatial), {}

    def semantics(self, spec: ObserveSpec, attrs: dict[str, Any], b: ProgramBuilder, inputs: Sequence[Value], ctx: LowerContext) -> Value:
        return b.call("gate", ObserveGate(), inputs[0], inputs[1])
