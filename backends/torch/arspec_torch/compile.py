"""compile_model: IR -> ARModel on a device, through the interpreter."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from arspec.backends import CompileOptions
from arspec.ir.graph import IRGraph
from arspec_torch.armodel import ARModel
from arspec_torch.cache import cache_for, no_cache_because
from arspec_torch.distributions import build_distribution
from arspec_torch.flows import FlowStudent
from arspec_torch.latent import LatentVariableModel
from arspec_torch.network import Network
from arspec_torch.plan import conditioning_of, plan_of


def torch_dtype(value: Any) -> torch.dtype:
    """A torch dtype from a dtype or its name ("float64"); float32 by default."""
    if value is None:
        return torch.float32
    if isinstance(value, torch.dtype):
        return value
    return getattr(torch, str(value))


def distribution_of(ir: IRGraph) -> Any:
    d = ir.distribution
    return build_distribution(d.kind, d.classes, d.mixtures, d.coupled_channels, d.min_scale)


def orders_of(ir: IRGraph) -> np.ndarray:
    """The orderings of the mask sets; an order-agnostic model is evaluated and sampled in raster order."""
    if ir.ctx.agnostic:
        return np.arange(ir.ctx.elements)[None, :]
    return np.stack([ir.ctx.order(m) for m in range(len(ir.ctx.orders))])



def compile_model(ir: IRGraph, options: CompileOptions) -> ARModel:
    """Build the torch module of a lowered spec. `options.seed` makes the initial weights reproducible."""
    if options.seed is not None:
        torch.manual_seed(options.seed)
    plan = plan_of(ir)
    net = Network(plan)
    orders = orders_of(ir)
    agnostic = ir.ctx.agnostic
    cache = None if agnostic else cache_for([pc.step for pc in plan.calls], plan.output, ir.ctx.event, orders, ir.dense_output)
    model = ARModel(net, distribution_of(ir), ir.event_shape, orders, conditioning_of(ir), ir.dense_output, cache,
                    agnostic=agnostic, ordering_seed=ir.ctx.ordering_seed)
    if cache is None and not agnostic:
        model.no_cache_reason = no_cache_because([pc.step for pc in plan.calls], ir.ctx.event, orders, ir.dense_output)
    return model.to(device=options.device, dtype=torch_dtype(options.dtype))


def compile_composite(ir: Any, options: CompileOptions) -> LatentVariableModel | FlowStudent:
    """Build a model of several parts (an arspec.composite.ir.CompositeIR): a latent-variable model
    (the encoder network, the decoder and an autoregressive prior through compile_model, the links
    between them) or a student of inverse autoregressive flows."""
    if options.seed is not None:
        torch.manual_seed(options.seed)
    parts = CompileOptions(device=options.device, dtype=options.dtype, seed=None)
    if ir.kind == "flows":
        return FlowStudent([compile_model(flow, parts) for flow in ir.flows], ir.objective.model_dump()).to(device=options.device, dtype=torch_dtype(options.dtype))
    links = {link.input: ("latent" if link.is_latent else link.node) for link in ir.links}
    taps = tuple(sorted({link.node for link in ir.links if not link.is_latent}))
    encoder = Network(plan_of(ir.encoder), taps=taps)
    decoder = compile_model(ir.decoder, parts)
    prior = compile_model(ir.prior, parts) if ir.prior is not None else None
    model = LatentVariableModel(encoder, decoder, prior, ir.latent_shape, ir.min_scale, links, ir.objective.model_dump())
    return model.to(device=options.device, dtype=torch_dtype(options.dtype))
