"""nade — the Neural Autoregressive Distribution Estimator (Larochelle & Murray 2011).

One weight matrix W is shared by every conditional: the hidden pre-activation of element d is
c + W[:, <d] x_<d, a cumulative sum along the ordering, so all D conditionals cost O(DH) in one
pass. Element d's parameters read exactly the elements of earlier steps."""
from __future__ import annotations

import math
from typing import Any, Literal, Sequence

import numpy as np
import torch
from pydantic import Field
from torch import nn

from arspec.ops.base import LowerContext, NodeSpec, Op, ShapeError, TensorType, register_op


class NadeSpec(NodeSpec):
    op: Literal["nade"]
    hidden: int = Field(500, ge=1, le=1_000_000)
    hidden_activation: Literal["sigmoid", "relu", "tanh"] = Field("sigmoid", description="Of the shared hidden layer; the outputs are distribution parameters and take none.")


class Nade(nn.Module):
    """All conditionals of NADE in one pass with an exclusive cumulative sum along the order."""

    def __init__(self, orders: np.ndarray, hidden: int, params: int, activation: str) -> None:
        super().__init__()
        d = orders.shape[1]
        self.register_buffer("perms", torch.as_tensor(np.argsort(orders, axis=1, kind="stable")), persistent=False)
        self.W = nn.Parameter(torch.randn(d, hidden) / math.sqrt(d))
        self.c = nn.Parameter(torch.zeros(hidden))
        self.V = nn.Parameter(torch.randn(params, d, hidden) / math.sqrt(hidden))
        self.b = nn.Parameter(torch.zeros(params, d))
        self.act = {"sigmoid": torch.sigmoid, "relu": torch.relu, "tanh": torch.tanh}[activation]
        self.active = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        perm = self.perms[self.active % self.perms.shape[0]]
        xs = x.flatten(1)[:, perm]                                 # (B, D) in generation order
        contrib = xs.unsqueeze(-1) * self.W[perm]                 # (B, D, H)
        # exclusive cumulative sum by shifting (not cumsum - contrib, which leaks x_d by rounding)
        a = torch.cumsum(torch.nn.functional.pad(contrib[:, :-1], (0, 0, 1, 0)), dim=1) + self.c
        h = self.act(a)
        out = torch.einsum("bdh,pdh->bpd", h, self.V[:, perm]) + self.b[:, perm]
        inverse = torch.empty_like(perm)
        inverse[perm] = torch.arange(perm.numel(), device=perm.device)
        return out[:, :, inverse].reshape(x.shape[0], -1)


class NadeSampler:
    """Cached generation for NADE: the hidden pre-activation a = c + W[:, <d] x_<d is carried
    along the order and updated once per element, O(DH) per sample instead of a full O(DH) pass
    per element. Draws the same uniforms in the same order as the naive loop."""

    def __init__(self, nade: Nade) -> None:
        self.nade = nade

    @torch.no_grad()
    def __call__(self, model, x: torch.Tensor, keep: torch.Tensor | None, generator, context) -> torch.Tensor:
        nade, d = self.nade, model.distribution
        n = x.shape[0]
        flat = x.reshape(n, -1).clone()
        known = keep.reshape(-1) if keep is not None else None
        a = nade.c.expand(n, -1).clone()
        for e in nade.perms[nade.active % nade.perms.shape[0]].tolist():
            params = nade.act(a) @ nade.V[:, e].t() + nade.b[:, e]              # (n, P)
            value = d.sample(params.unsqueeze(1), model._uniforms(n, 1, generator))[:, 0].to(flat.dtype)
            if known is not None and bool(known[e]):
                value = flat[:, e]
            flat[:, e] = value
            a = a + d.encode(value, a.dtype).unsqueeze(-1) * nade.W[e]
        return flat.reshape(x.shape)


@register_op
class NadeOp(Op):
    name = "nade"
    Spec = NadeSpec
    data_dependent_masks = True

    def infer(self, spec: NadeSpec, inputs: Sequence[TensorType], ctx: LowerContext) -> tuple[TensorType, dict[str, Any]]:
        orders = np.stack([ctx.order(m) for m in range(max(ctx.masks, len(ctx.orders)))])
        for o in orders:
            if len(np.unique(o)) != o.size:
                raise ShapeError("nade needs an ordering with one element per step (no multiscale groups)", "op")
        if inputs[0].numel != ctx.elements:
            raise ShapeError("nade reads the data x directly", "inputs")
        return TensorType(ctx.params_per_element * ctx.elements, (), None), {"orders": orders}

    def footprint(self, spec, attrs, inputs, out, mask):
        order = attrs["orders"][mask % len(attrs["orders"])]
        strict = order[None, :] < order[:, None]                 # (D, D): element d reads e before it
        p = out.channels // order.size
        return inputs[0].dense(np.tile(strict, (p, 1)))

    def build(self, spec, attrs, inputs, out, ctx):
        return Nade(attrs["orders"], spec.hidden, ctx.params_per_element, spec.hidden_activation)

    def sampler(self, module: Nade) -> NadeSampler:
        """Cached generation when the model is this one node on x (see runtime.incremental)."""
        return NadeSampler(module)

    def parameter_count(self, spec, attrs, inputs, out):
        d = inputs[0].numel
        return d * spec.hidden + spec.hidden + out.channels * spec.hidden + out.channels
