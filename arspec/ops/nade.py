"""nade — the Neural Autoregressive Distribution Estimator (Larochelle & Murray 2011).

One weight matrix W is shared by every conditional: the hidden pre-activation of element d is
c + W[:, <d] x_<d, a cumulative sum along the ordering, so all D conditionals cost O(DH) in one
pass (`ordered_prefix_linear`); each element then reads out its parameters from its own hidden
vector (`element_linear`). Element d's parameters read exactly the elements of earlier steps.

With `rescale: true` each element first multiplies its pre-activation by a learnt scalar rho_d
(RNADE, Uria et al. 2013): the running sum grows along the order, and the rescaling keeps late
elements' units out of saturation. With a real-valued mixture distribution this is RNADE."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field

from arspec.ops.base import LowerContext, NodeSpec, Op, ShapeError
from arspec.ops.registry import register_op
from arspec.primitives import Activation, ElementLinear, ElementScale, OrderedPrefixLinear
from arspec.primitives.program import ProgramBuilder, Value
from arspec.types import TensorType


class NadeSpec(NodeSpec):
    op: Literal["nade"]
    hidden: int = Field(500, ge=1, le=1_000_000)
    hidden_activation: Literal["sigmoid", "relu", "tanh"] = Field("sigmoid", description="Of the shared hidden layer; the outputs are distribution parameters and take none.")
    rescale: bool = Field(False, description="RNADE's per-element activation rescaling: element d's pre-activation times a learnt rho_d (initially 1).")


@register_op
class NadeOp(Op):
    name = "nade"
    Spec = NadeSpec

    def infer(self, spec: NadeSpec, inputs: Sequence[TensorType], ctx: LowerContext) -> tuple[TensorType, dict[str, Any]]:
        if ctx.agnostic:
            raise ShapeError("nade shares one running sum along an ordering; an order-agnostic NADE is a network over "
                             "[observe x, observed] (see specs/deep_nade.yaml)", "op")
        orders = np.stack([ctx.order(m) for m in range(max(ctx.masks, len(ctx.orders)))])
        for o in orders:
            if len(np.unique(o)) != o.size:
                raise ShapeError("nade needs an ordering with one element per step (no multiscale groups)", "op")
        if inputs[0].numel != ctx.elements:
            raise ShapeError("nade reads the data x directly", "inputs")
        if ctx.elements * spec.hidden * (ctx.params_per_element + 1) > 200_000_000:
            raise ShapeError(f"layer too large: {ctx.elements:,} elements x {spec.hidden:,} hidden units", "hidden")
        return TensorType(ctx.params_per_element * ctx.elements, ()), {"orders": orders}

    def semantics(self, spec: NadeSpec, attrs: dict[str, Any], b: ProgramBuilder, inputs: Sequence[Value], ctx: LowerContext) -> Value:
        pre = b.call("prefix", OrderedPrefixLinear(attrs["orders"], spec.hidden), inputs[0])
        if spec.rescale:
            pre = b.call("rescale", ElementScale(ctx.elements, spec.hidden), pre)
        hidden = b.call("hidden", Activation(spec.hidden_activation), pre)
        return b.call("readout", ElementLinear(ctx.elements, spec.hidden, ctx.params_per_element), hidden)
