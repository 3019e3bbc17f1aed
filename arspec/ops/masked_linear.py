"""masked_linear — MADE's masked dense layer (Germain et al. 2015).

Each unit carries a degree. A hidden unit of degree m reads units of degree <= m; an output unit
for element d (degree = its step + 1) reads units of degree < that, so it sees only earlier steps.
With several mask sets (connectivity-agnostic training) each set draws its own hidden degrees."""
from __future__ import annotations

from typing import Annotated, Any, Literal, Sequence

import numpy as np
from pydantic import Field

from arspec.analysis.deps import Deps
from arspec.ops.base import Activation, LowerContext, NodeSpec, Op, ShapeError, TensorType, register_op
from arspec.ops.masks import hidden_degrees
from arspec.runtime.layers import MaskedLinear


class MaskedLinearSpec(NodeSpec):
    op: Literal["masked_linear"]
    features: Annotated[int, Field(ge=1, le=10_000_000)] | Literal["output"] = Field(description="Hidden units, or 'output' for the distribution head.")
    degrees: Literal["random", "natural"] = Field("random", description="How hidden degrees are assigned.")
    seed: int = Field(0, description="Seed for random degrees (combined with the mask index).")
    direct: bool = Field(False, description="Output only: add direct (masked) connections from x.")
    activation: Activation = "none"
    bias: bool = True


def _input_degrees(t: TensorType, ctx: LowerContext, mask: int) -> np.ndarray:
    if t.degrees is None:
        raise ShapeError("masked_linear needs an input that carries MADE degrees (x or another masked_linear)", "inputs")
    return t.degrees[mask]


@register_op
class MaskedLinearOp(Op):
    name = "masked_linear"
    Spec = MaskedLinearSpec
    data_dependent_masks = True

    def infer(self, spec: MaskedLinearSpec, inputs: Sequence[TensorType], ctx: LowerContext) -> tuple[TensorType, dict[str, Any]]:
        inp = inputs[0]
        steps = int(max(o.max() for o in ctx.orders)) + 1
        features = ctx.params_per_element * ctx.elements if spec.features == "output" else spec.features
        if features * inp.numel * ctx.masks > 200_000_000:
            raise ShapeError(f"layer too large: {features:,} x {inp.numel:,} weights over {ctx.masks} masks", "features")
        masks, direct, degrees = [], [], []
        if spec.features == "output":
            if spec.activation != "none":
                raise ShapeError("the output layer must not have an activation (it produces distribution parameters)", "activation")
            for m in range(ctx.masks):
                deg_in = _input_degrees(inp, ctx, m)
                out_deg = np.tile(ctx.order(m) + 1, ctx.params_per_element)
                masks.append(out_deg[:, None] > deg_in[None, :])
                direct.append(out_deg[:, None] > (ctx.order(m) + 1)[None, :])
                degrees.append(out_deg)
        else:
            if spec.direct:
                raise ShapeError("direct connections are only for the output layer (features: output)", "direct")
            if features < 1:
                raise ShapeError(f"features must be positive, got {features}", "features")
            for m in range(ctx.masks):
                deg_in = _input_degrees(inp, ctx, m)
                rng = np.random.default_rng([spec.seed, m, ctx.seed])
                low = int(min(deg_in.min(), steps - 1))
                deg = hidden_degrees(rng, features, max(1, low), steps - 1, spec.degrees == "natural")
                masks.append(deg[:, None] >= deg_in[None, :])
                degrees.append(deg)
        attrs = {"masks": np.stack(masks), "direct": np.stack(direct) if spec.direct else None}
        return TensorType(features, (), degrees), attrs

    def extra_inputs(self, spec: MaskedLinearSpec) -> list[str]:
        return ["x"] if spec.direct else []

    def footprint(self, spec, attrs, inputs: Sequence[Deps], out, mask) -> Deps:
        deps = inputs[0].dense(attrs["masks"][mask % len(attrs["masks"])])
        if spec.direct:
            deps = deps.union(inputs[1].dense(attrs["direct"][mask % len(attrs["direct"])]))
        return deps

    def build(self, spec, attrs, inputs, out, ctx):
        return _MadeLayer(attrs["masks"], attrs["direct"], spec.bias)

    def parameter_count(self, spec, attrs, inputs, out):
        units = inputs[0].numel
        direct = out.channels * inputs[-1].numel if spec.direct else 0
        return out.channels * units + out.channels + direct


class _MadeLayer(MaskedLinear):
    """A masked linear layer, with optional direct masked connections from the data."""

    def __init__(self, masks: np.ndarray, direct: np.ndarray | None, bias: bool) -> None:
        super().__init__(masks, bias)
        self.direct = MaskedLinear(direct, bias=False) if direct is not None else None

    def forward(self, h, x=None):
        out = super().forward(h)
        if self.direct is not None:
            self.direct.active = self.active
            out = out + self.direct(x)
        return out
