"""masked_linear — MADE's masked dense layer (Germain et al. 2015).

Each unit carries a degree. A hidden unit of degree m reads units of degree <= m; an output unit
for element d (degree = its step + 1) reads units of degree < that, so it sees only earlier steps.
With several mask sets (connectivity-agnostic training) each set draws its own hidden degrees."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field

from arspec.ops.base import LowerContext, NodeSpec, Op, ShapeError
from arspec.ops.fields import Activation
from arspec.ops.masks import hidden_degrees
from arspec.ops.registry import register_op
from arspec.primitives import Add, MaskedDense
from arspec.primitives.program import ProgramBuilder, Value
from arspec.types import TensorType

MAX_DENSE_WEIGHTS = 200_000_000


class MaskedLinearSpec(NodeSpec):
    op: Literal["masked_linear"]
    features: Annotated[int, Field(ge=1, le=10_000_000)] | Literal["output"] = Field(description="Hidden units, or 'output' for the distribution head.")
    degrees: Literal["random", "natural"] = Field("random", description="How hidden degrees are assigned.")
    seed: int = Field(0, description="Seed for random degrees (combined with the mask index).")
    direct: bool = Field(False, description="Output only: add direct (masked) connections from x.")
    activation: Activation = "none"
    bias: bool = True


def _input_degrees(t: TensorType, mask: int) -> np.ndarray:
    if t.degrees is None:
        raise ShapeError("masked_linear needs an input that carries MADE degrees (x or another masked_linear)", "inputs")
    return t.degrees[mask % len(t.degrees)]


@register_op
class MaskedLinearOp(Op):
    name = "masked_linear"
    Spec = MaskedLinearSpec

    def infer(self, spec: MaskedLinearSpec, inputs: Sequence[TensorType], ctx: LowerContext) -> tuple[TensorType, dict[str, Any]]:
        if ctx.agnostic:
            raise ShapeError("masked_linear masks by an ordering; an order-agnostic model uses linear layers over "
                             "[observe x, observed]", "op")
        inp = inputs[0]
        features = ctx.params_per_element * ctx.elements if spec.features == "output" else spec.features
        if features * inp.numel * ctx.masks > MAX_DENSE_WEIGHTS:
            raise ShapeError(f"layer too large: {features:,} x {inp.numel:,} weights over {ctx.masks} masks", "features")
        deg_in = np.stack([_input_degrees(inp, m) for m in range(ctx.masks)])
        if spec.features == "output":
            if spec.activation != "none":
                raise ShapeError("the output layer must not have an activation (it produces distribution parameters)", "activation")
            deg_out = np.stack([np.tile(ctx.order(m) + 1, ctx.params_per_element) for m in range(ctx.masks)])
        else:
            if spec.direct:
                raise ShapeError("direct connections are only for the output layer (features: output)", "direct")
            deg_out = np.stack([self._hidden(spec, features, deg_in[m], ctx, m) for m in range(ctx.masks)])
        dense = MaskedDense(deg_in, deg_out, strict=spec.features == "output", bias=spec.bias)
        direct = None
        if spec.direct:
            data = np.stack([ctx.order(m) + 1 for m in range(ctx.masks)])
            direct = MaskedDense(data, deg_out, strict=True, bias=False)
        return TensorType(features, (), list(deg_out)), {"dense": dense, "direct": direct}

    @staticmethod
    def _hidden(spec: MaskedLinearSpec, features: int, deg_in: np.ndarray, ctx: LowerContext, m: int) -> np.ndarray:
        steps = int(max(o.max() for o in ctx.orders)) + 1
        rng = np.random.default_rng([spec.seed, m, ctx.seed])
        low = int(min(deg_in.min(), steps - 1))
        return hidden_degrees(rng, features, max(1, low), steps - 1, spec.degrees == "natural")

    def extra_inputs(self, spec: MaskedLinearSpec) -> list[str]:
        return ["x"] if spec.direct else []

    def semantics(self, spec: MaskedLinearSpec, attrs: dict[str, Any], b: ProgramBuilder, inputs: Sequence[Value], ctx: LowerContext) -> Value:
        out = b.call("dense", attrs["dense"], inputs[0])
        if attrs["direct"] is not None:
            out = b.call("with_direct", Add(), out, b.call("direct", attrs["direct"], inputs[1]))
        return out
