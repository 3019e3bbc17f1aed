"""compile_model: ModelSpec -> ARModel on a device."""
from __future__ import annotations

import numpy as np
import torch

from arspec.runtime import incremental
from arspec.runtime.armodel import ARModel
from arspec_torch.graph_module import GraphModule


def compile_model(spec, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, seed: int | None = None) -> ARModel:
    """Build the torch module of a validated spec. `seed` makes the initial weights reproducible."""
    ir = spec.ir
    if seed is not None:
        torch.manual_seed(seed)
    net = GraphModule(ir)
    orders = np.stack([ir.ctx.order(m) for m in range(len(ir.ctx.orders))])
    model = ARModel(net, ir.distribution, tuple(spec.event.shape), orders, spec.conditioning, ir.dense_output,
                    spec.source_text, getattr(spec, "_overrides", []))
    model.incremental = incremental.sampler_for(ir, spec, net)
    return model.to(device=device, dtype=dtype)
