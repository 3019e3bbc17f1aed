"""A latent-variable model with an autoregressive decoder (PixelVAE, Gulrajani et al. 2017):
q(z | x) a diagonal Gaussian from the encoder network, p(z) a standard normal or an autoregressive
model over the latent map, p(x | z) an ARModel reading z through its local conditioning inputs.

Training minimises the negative ELBO with a KL weight warmed up from 0 to 1 (and optional free
bits); evaluation reports the bound or the importance-weighted estimate of log p(x) with K samples
(Burda et al. 2016), which tends to log p(x) as K grows."""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from arspec_torch.armodel import ARModel
from arspec_torch.network import Network

LOG_2PI = math.log(2 * math.pi)


def _normal_log_density(z: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """log N(z; mean, scale²) summed over all but the batch axis, (B,)."""
    return (-0.5 * ((z - mean) / scale) ** 2 - torch.log(scale) - 0.5 * LOG_2PI).flatten(1).sum(1)


class LatentVariableModel(nn.Module):
    """encoder (a Network over x) -> z -> decoder (an ARModel given z); prior over z.

    `links` maps each decoder input fed by another part to its source: "latent", or an encoder
    node's name (a leak the verifier reports; built so tests can show the leak is real)."""

    def __init__(self, encoder: Network, decoder: ARModel, prior: ARModel | None, latent_shape: tuple[int, ...],
                 min_scale: float, links: dict[str, str], objective: dict[str, Any]) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.prior = prior
        self.latent_shape = tuple(int(s) for s in latent_shape)
        self.min_scale = float(min_scale)
        self.links = dict(links)
        self.kl_warmup = int(objective.get("kl_warmup", 0))
        self.free_nats = float(objective.get("free_nats", 0.0))
        self.iw_samples = int(objective.get("iw_samples", 1))
        self.kl_weight = 1.0 if self.kl_warmup == 0 else 0.0
        self.last_terms: dict[str, float] = {}
        self.event_shape = decoder.event_shape
        self.distribution = decoder.distribution
        self.conditioning = {k: c for k, c in decoder.conditioning.items() if k not in self.links}
        self.agnostic = False

    # -- what tools read off any model -----------------------------------------------------------
    @property
    def order(self) -> torch.Tensor:
        return self.decoder.order

    @property
    def num_masks(self) -> int:
        return 1

    def select_mask(self, index: int) -> None:
        """A latent-variable model has one mask set (its decoder's)."""

    @property
    def device(self) -> torch.device:
        return self.decoder.device

    @property
    def dtype(self) -> torch.dtype:
        return self.decoder.dtype

    @property
    def latent_inputs(self) -> list[str]:
        return [k for k, v in self.links.items() if v == "latent"]

    def set_step(self, step: int) -> None:
        """The KL weight at optimisation step `step`: linear warm-up from 0 to 1 over `kl_warmup` steps."""
        self.kl_weight = 1.0 if self.kl_warmup == 0 else min(1.0, step / self.kl_warmup)

    # -- the parts ---------------------------------------------------------------------------------
    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """q(z | x): mean and standard deviation (B, *latent_shape), and the encoder nodes other parts read."""
        x = x.to(self.device)
        raw = self.decoder.to_internal(x)
        out, taps = self.encoder.forward_taps(raw, self.distribution.encode(raw, self.dtype), {})
        c = self.latent_shape[0]
        return out[:, :c], F.softplus(out[:, c:]) + self.min_scale, taps

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z), (B,)."""
        if self.prior is None:
            return (-0.5 * z ** 2 - 0.5 * LOG_2PI).flatten(1).sum(1)
        return self.prior.log_prob(z)

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws of z from the prior."""
        if self.prior is not None:
            return self.prior.sample(n, generator=generator)
        device = generator.device if generator is not None else self.device
        return torch.randn((n, *self.latent_shape), generator=generator, device=device).to(self.device, self.dtype)

    def _decoder_context(self, z: torch.Tensor | None, taps: dict[str, torch.Tensor], context: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        fed = {}
        for name, source in self.links.items():
            if source == "latent":
                fed[name] = z
            else:
                if source not in taps:
                    raise ValueError(f"the decoder's input {name!r} is the encoder's node {source!r}, computed from x: this model "
                                     f"cannot run without x (arspec check reports the leak)")
                fed[name] = taps[source]
        return {**context, **fed}

    # -- likelihoods -------------------------------------------------------------------------------
    def elbo_terms(self, x: torch.Tensor, generator: torch.Generator | None = None, **context: torch.Tensor) -> dict[str, torch.Tensor]:
        """One reparameterised draw z ~ q(z | x): `reconstruction` log p(x | z), `kl` (B,) and the
        KL per latent channel `kl_channels` (B, C) — closed form under a standard normal prior, the
        one-sample estimate log q(z | x) - log p(z) under an autoregressive one."""
        x = x.to(self.device)
        mean, scale, taps = self.posterior(x)
        device = generator.device if generator is not None else self.device
        eps = torch.randn(mean.shape, generator=generator, device=device).to(self.device, mean.dtype)
        z = mean + scale * eps
        reconstruction = self.decoder.log_prob(x, **self._decoder_context(z, taps, context))
        if self.prior is None:
            kl_elements = 0.5 * (mean ** 2 + scale ** 2 - 1) - torch.log(scale)
        else:
            log_q = -0.5 * eps ** 2 - torch.log(scale) - 0.5 * LOG_2PI
            kl_elements = log_q - self.prior.log_prob_elements(z)
        kl_channels = kl_elements.flatten(2).sum(2)
        return {"reconstruction": reconstruction, "kl": kl_channels.sum(1), "kl_channels": kl_channels, "z": z}

    def elbo(self, x: torch.Tensor, generator: torch.Generator | None = None, **context: torch.Tensor) -> torch.Tensor:
        """The evidence lower bound on log p(x) in nats, (B,) (one posterior sample)."""
        terms = self.elbo_terms(x, generator, **context)
        return terms["reconstruction"] - terms["kl"]

    def log_prob_iw(self, x: torch.Tensor, samples: int, generator: torch.Generator | None = None, **context: torch.Tensor) -> torch.Tensor:
        """The importance-weighted estimate of log p(x) with `samples` posterior draws, (B,):
        log (1/K) sum_k p(x | z_k) p(z_k) / q(z_k | x). A lower bound in expectation that
        tightens as K grows (K = 1 is the ELBO)."""
        x = x.to(self.device)
        mean, scale, taps = self.posterior(x)
        device = generator.device if generator is not None else self.device
        weights = []
        for _ in range(samples):
            eps = torch.randn(mean.shape, generator=generator, device=device).to(self.device, mean.dtype)
            z = mean + scale * eps
            log_px = self.decoder.log_prob(x, **self._decoder_context(z, taps, context))
            weights.append(log_px + self.log_prior(z) - _normal_log_density(z, mean, scale))
        return torch.logsumexp(torch.stack(weights), dim=0) - math.log(samples)

    def log_prob(self, x: torch.Tensor, iw: int | None = None, generator: torch.Generator | None = None,
                 ensemble: bool = False, orderings: int | None = None, **context: torch.Tensor) -> torch.Tensor:
        """An estimate of log p(x), (B,): the ELBO (`iw` 1) or the importance-weighted estimate with
        `iw` samples (default: the spec's objective.iw_samples). Given z (`z=...` in context), the
        decoder's exact log p(x | z) instead."""
        if orderings is not None:
            raise ValueError("orderings= is for order-agnostic models")
        if all(k in context for k in self.latent_inputs):
            return self.decoder.log_prob(x, ensemble=ensemble, **self._given_z(x, context))
        k = self.iw_samples if iw is None else int(iw)
        if k < 1:
            raise ValueError(f"iw must be at least 1, got {k}")
        return self.elbo(x, generator, **context) if k == 1 else self.log_prob_iw(x, k, generator, **context)

    def _given_z(self, x: torch.Tensor, context: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The decoder's context when the caller gives z (`z=...`): the model is autoregressive over x given z."""
        missing = [k for k in self.latent_inputs if k not in context]
        if missing:
            raise ValueError(f"pass {', '.join(f'{k}=...' for k in missing)}: a latent-variable model is autoregressive over x "
                             f"given z (log_prob(x) estimates log p(x) by integrating z out)")
        taps = self.posterior(x)[2] if any(v != "latent" for v in self.links.values()) else {}
        context = dict(context)
        z = context.pop(self.latent_inputs[0]) if self.latent_inputs else None
        return self._decoder_context(z, taps, context)

    def log_prob_elements(self, x: torch.Tensor, **context: torch.Tensor) -> torch.Tensor:
        """log p(x_e | earlier elements, z) for every element, (B, *event_shape): the decoder given
        z, which must be passed (`z=...`)."""
        return self.decoder.log_prob_elements(x, **self._given_z(x, context))

    def forward(self, x: torch.Tensor, **context: torch.Tensor) -> torch.Tensor:
        """The decoder's distribution parameters given z (`z=...`), (B, *event_shape, P)."""
        return self.decoder(x, **self._given_z(x, context))

    def training_loss(self, x: torch.Tensor, **context: torch.Tensor) -> torch.Tensor:
        """-reconstruction + kl_weight * KL per item, (B,); free bits clamp each channel's KL from below."""
        terms = self.elbo_terms(x, **context)
        kl = terms["kl_channels"]
        if self.free_nats > 0:
            kl = torch.clamp(kl, min=self.free_nats)
        self.last_terms = {"kl": float(terms["kl"].detach().mean()), "reconstruction": float(-terms["reconstruction"].detach().mean())}
        return -terms["reconstruction"] + self.kl_weight * kl.sum(1)

    # -- generation --------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, cache: bool = True, temperature: float = 1.0,
               z: torch.Tensor | None = None, **context: torch.Tensor) -> torch.Tensor:
        """n samples: z from the prior (or the given `z`), then the decoder's (cached) generation."""
        if any(v != "latent" for v in self.links.values()):
            raise ValueError("this model's decoder reads the encoder's features of x, which do not exist when sampling "
                             "(arspec check reports the leak)")
        was = self.training
        self.eval()
        try:
            z = self.sample_latent(n, generator) if z is None else z.to(self.device, self.dtype)
            fed = {k: z for k in self.latent_inputs}
            return self.decoder.sample(n, generator=generator, cache=cache, temperature=temperature, **fed, **context)
        finally:
            self.train(was)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, generator: torch.Generator | None = None, cache: bool = True, **context: torch.Tensor) -> torch.Tensor:
        """Decode the posterior mean of each item: samples of p(x | z = E[z | x])."""
        mean, _, _ = self.posterior(x)
        return self.sample(len(x), generator=generator, cache=cache, z=mean, **context)

    @torch.no_grad()
    def interpolate(self, a: torch.Tensor, b: torch.Tensor, steps: int, generator: torch.Generator | None = None,
                    cache: bool = True) -> torch.Tensor:
        """Decodings along the line between the posterior means of items a and b (each (1, *event)
        or event-shaped): (steps, *event_shape)."""
        za = self.posterior(a.reshape(1, *self.event_shape))[0]
        zb = self.posterior(b.reshape(1, *self.event_shape))[0]
        t = torch.linspace(0, 1, steps, device=self.device, dtype=za.dtype).view(-1, *([1] * (za.dim() - 1)))
        return self.sample(steps, generator=generator, cache=cache, z=(1 - t) * za + t * zb)

    def example_inputs(self, batch_size: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Random valid data and the context the user supplies (z is not part of it)."""
        x, context = self.decoder.example_inputs(batch_size, generator)
        return x, {k: v for k, v in context.items() if k not in self.links}
