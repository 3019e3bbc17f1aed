"""ARModel — the module both torch backends return (see CONTRACT.md).

`net` maps (x as class indices or reals, its float encoding, context) to the distribution
parameters laid out parameter-major; everything a user calls — log-probabilities, mask selection,
sampling, completion — is implemented here once. Imports nothing from arspec: generated
standalone files carry a copy of this class."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn


class ARModel(nn.Module):
    """An autoregressive model p(x) = prod_e p(x_e | elements of earlier steps).

    `conditioning` maps each context name to {"type": "global", "classes": K} or
    {"type": "local", "channels": C, "upsample": f}; `incremental` is an optional cached sampler."""

    def __init__(self, net: nn.Module, distribution: Any, event_shape: tuple[int, ...], orders: np.ndarray,
                 conditioning: dict[str, dict[str, Any]], dense_output: bool, incremental: Any = None) -> None:
        super().__init__()
        self.net = net
        self.distribution = distribution
        self.event_shape = tuple(event_shape)
        self.internal_shape = (1, event_shape[0]) if len(event_shape) == 1 else tuple(event_shape)
        self.register_buffer("orders", torch.as_tensor(np.asarray(orders), dtype=torch.long).reshape(-1, *self.event_shape), persistent=False)
        self.conditioning = {name: dict(c) for name, c in conditioning.items()}
        self.dense_output = dense_output
        self.active_mask = 0
        self.incremental = incremental
        self.temperature = 1.0          # of the sampling in progress (read by the cached samplers)

    # -- masks and orderings ------------------------------------------------------------------
    @property
    def num_masks(self) -> int:
        return max(int(self.orders.shape[0]), int(getattr(self.net, "mask_sets", 1)))

    def select_mask(self, index: int) -> None:
        """Use mask set (and ordering) `index` (connectivity-agnostic training, MADE/NADE)."""
        self.active_mask = int(index) % self.num_masks
        self.net.active = self.active_mask

    @property
    def order(self) -> torch.Tensor:
        """The generation step of each element under the active mask."""
        return self.orders[self.active_mask % self.orders.shape[0]]

    @property
    def device(self) -> torch.device:
        return self.orders.device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the floating parameters (float32 for a model without any)."""
        for t in self.parameters():
            return t.dtype
        return getattr(self, "_dtype", torch.float32)

    def _apply(self, fn: Any, recurse: bool = True) -> ARModel:
        # remember the dtype a parameter-free model was moved to (model.double() on `output: x`)
        probe = fn(torch.zeros((), dtype=getattr(self, "_dtype", torch.float32)))
        if probe.is_floating_point():
            self._dtype = probe.dtype
        return super()._apply(fn, recurse)

    # -- evaluation -----------------------------------------------------------------------------
    def _check_context(self, context: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        missing = [k for k in self.conditioning if k not in context]
        unknown = [k for k in context if k not in self.conditioning]
        if missing or unknown:
            raise ValueError(f"context mismatch: missing {missing}, unexpected {unknown}")
        return {k: v.to(self.device) for k, v in context.items()}

    def forward(self, x: torch.Tensor, **context: torch.Tensor) -> torch.Tensor:
        """Distribution parameters of every element: (B, *event_shape, P)."""
        x = x.to(self.device)
        context = self._check_context(context)
        raw = x.reshape(x.shape[0], *self.internal_shape)
        out = self.net(raw, self.distribution.encode(raw, self.dtype), context)
        out = out.reshape(x.shape[0], self.distribution.params_per_element, *self.event_shape)
        return torch.movedim(out, 1, -1)

    def log_prob_elements(self, x: torch.Tensor, **context: torch.Tensor) -> torch.Tensor:
        """log p(x_e | earlier steps) for every element, natural log: (B, *event_shape)."""
        return self.distribution.log_prob(self.forward(x, **context), x.to(self.device))

    def log_prob(self, x: torch.Tensor, ensemble: bool = False, **context: torch.Tensor) -> torch.Tensor:
        """log p(x) in nats, (B,). `ensemble=True` averages p over every mask set (MADE)."""
        if not ensemble or self.num_masks == 1:
            return self.log_prob_elements(x, **context).flatten(1).sum(dim=1)
        current = self.active_mask
        terms = []
        for m in range(self.num_masks):
            self.select_mask(m)
            terms.append(self.log_prob_elements(x, **context).flatten(1).sum(dim=1))
        self.select_mask(current)
        return torch.logsumexp(torch.stack(terms), dim=0) - math.log(len(terms))

    def example_inputs(self, batch_size: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Random valid data of event_shape and a dict of valid context tensors."""
        d = self.distribution
        shape = (batch_size, *self.event_shape)
        if d.discrete:
            x = torch.randint(0, d.classes, shape, generator=generator)
        else:
            x = torch.randn(shape, generator=generator)
        return x.to(self.device), self.example_context(batch_size, generator)

    def example_context(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        context = {}
        spatial = self.internal_shape[1:]
        for name, c in self.conditioning.items():
            if c["type"] == "global":
                context[name] = torch.randint(0, c["classes"], (batch_size,), generator=generator).to(self.device)
            else:
                low = [s // c["upsample"] for s in spatial]
                context[name] = torch.randn((batch_size, c["channels"], *low), generator=generator).to(self.device, self.dtype)
        return context

    # -- sampling --------------------------------------------------------------------------------
    def steps(self) -> list[torch.Tensor]:
        """Boolean masks over the event, one per generation step, in order."""
        order = self.order
        return [order == s for s in torch.unique(order)]

    def _blank(self, n: int) -> torch.Tensor:
        dtype = torch.long if self.distribution.discrete else self.dtype
        return torch.zeros((n, *self.event_shape), dtype=dtype, device=self.device)

    def uniforms(self, n: int, count: int, generator: torch.Generator | None) -> torch.Tensor:
        """The noise for `count` elements of n samples, drawn in one fixed order (both samplers)."""
        shape = (n, count, self.distribution.noise_per_element)
        device = generator.device if generator is not None else self.device
        return torch.rand(shape, generator=generator, device=device).to(self.device)

    def completion_is_exact(self, known: torch.Tensor) -> bool:
        """Whether every known element comes before every unknown one in the order: then completion
        draws from p(unknown | known) exactly; otherwise known elements are clamped (approximate)."""
        known = known.to(self.device, torch.bool).reshape(self.event_shape)
        if known.all() or not known.any():
            return True
        return bool(self.order[known].max() < self.order[~known].min())

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, cache: bool = True,
               given: torch.Tensor | None = None, known: torch.Tensor | None = None, temperature: float = 1.0,
               **context: torch.Tensor) -> torch.Tensor:
        """Draw n samples. `given`/`known` fix some elements (completion): exact when the known
        elements precede the unknown ones in the order, clamped sampling otherwise (with a warning).
        `temperature` divides the logits (categorical, Bernoulli, mixture weights).

        `cache=True` uses the cached sampler when the model has one; both paths draw the same
        uniforms in the same order, so with the same generator they give the same samples."""
        was_training = self.training
        self.eval()
        try:
            x = self._blank(n)
            keep = None
            if given is not None:
                x = given.to(self.device, x.dtype).expand(n, *self.event_shape).clone()
                keep = (torch.ones(self.event_shape, dtype=torch.bool, device=self.device) if known is None
                        else known.to(self.device, torch.bool).reshape(self.event_shape))
                if not self.completion_is_exact(keep):
                    import warnings
                    warnings.warn("completion is approximate: some known elements come after unknown ones in the "
                                  "generation order, so they are clamped rather than conditioned on", stacklevel=2)
            self.temperature = float(temperature)
            if cache and self.incremental is not None:
                return self.incremental(self, x, keep, generator, context)
            for step in self.steps():
                u = self.uniforms(n, int(step.sum()), generator)
                params = self.distribution.tempered(self.forward(x, **context), self.temperature)
                values = self.distribution.sample_step(params, x, step, u).to(x.dtype)
                if keep is not None:
                    values = torch.where(keep[step], x[:, step], values)
                x[:, step] = values
            return x
        finally:
            self.train(was_training)
