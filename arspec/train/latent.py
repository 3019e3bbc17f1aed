"""Figures of a latent-variable model on a data set: the bound, its two terms, and the
importance-weighted NLL — with the KL always reported, since a latent the decoder ignores (KL near
zero, "posterior collapse") makes the model a plain autoregressive one."""
from __future__ import annotations

from dataclasses import dataclass

import torch

UNUSED_LATENT_NATS = 0.5      # a KL below this per item means the decoder ignores z


@dataclass(frozen=True)
class LatentFigures:
    """Means per item, in nats: the negative ELBO, -E_q log p(x | z), KL(q || p), and the
    importance-weighted NLL with `iw` samples (None when not computed)."""

    bound: float
    reconstruction: float
    kl: float
    iw_nll: float | None
    iw: int
    items: int

    @property
    def latent_unused(self) -> bool:
        return self.kl < UNUSED_LATENT_NATS

    def text(self, per_dim) -> str:
        """One line: `per_dim(nats)` formats a per-dimension figure."""
        out = (f"negative ELBO {self.bound:.3f} nats ({per_dim(self.bound)}) = reconstruction {self.reconstruction:.3f} "
               f"+ KL {self.kl:.3f}")
        if self.iw_nll is not None:
            out += f"; importance-weighted NLL (K={self.iw}) {self.iw_nll:.3f} nats ({per_dim(self.iw_nll)})"
        if self.latent_unused:
            out += f"; WARNING: the latent is unused (KL {self.kl:.3f} nats < {UNUSED_LATENT_NATS}): the decoder ignores z"
        return out


@torch.no_grad()
def evaluate_latent(model, x: torch.Tensor, context: dict[str, torch.Tensor], iw: int = 1, batch_size: int = 128,
                    seed: int = 0) -> LatentFigures:
    """The figures of `model` over `x`, with a fixed draw of z (seeded)."""
    was = model.training
    model.eval()
    draw = torch.Generator().manual_seed(seed)
    rec = kl = weighted = 0.0
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size].to(model.device)
        cb = {k: v[start:start + batch_size].to(model.device) for k, v in context.items()}
        terms = model.elbo_terms(xb, generator=draw, **cb)
        rec += float(-terms["reconstruction"].sum())
        kl += float(terms["kl"].sum())
        if iw > 1:
            weighted += float(-model.log_prob_iw(xb, iw, generator=draw, **cb).sum())
    model.train(was)
    n = max(1, len(x))
    bound = (rec + kl) / n
    return LatentFigures(bound, rec / n, kl / n, weighted / n if iw > 1 else None, iw, len(x))
