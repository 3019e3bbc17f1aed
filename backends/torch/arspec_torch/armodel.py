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


def internal_shape_of(event_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The (channels, *spatial) layout the network computes in: a sequence [T] is (1, T), a video
    [T, C, H, W] is (C, T, H, W) (time the leading spatial axis, so raster order is time-major)."""
    shape = tuple(int(s) for s in event_shape)
    if len(shape) == 1:
        return (1, shape[0])
    if len(shape) == 4:
        return (shape[1], shape[0], shape[2], shape[3])
    return shape


class ARModel(nn.Module):
    """An autoregressive model p(x) = prod_e p(x_e | elements of earlier steps).

    `conditioning` maps each context name to {"type": "global", "classes": K} or
    {"type": "local", "channels": C, "upsample": f}; `incremental` is an optional cached sampler.

    An order-agnostic model (`agnostic`, Uria et al. 2014) reads x only through gates by the mask
    `observed` and predicts every unobserved element at once: its log-probability is exact for an
    ordering (one pass per step, batched), `orders[0]` is the ordering it is evaluated and sampled
    in, and `orderings=K` averages p over K random orderings."""

    #: at most this many rows (items x passes) an order-agnostic evaluation puts through the network
    #: at once; fewer where `memory_budget` bytes would not hold them (see `rows_within`)
    agnostic_rows = 4096
    #: bytes one batched evaluation call may use (`arspec eval --max-memory` sets it)
    memory_budget: int = 4 * 2 ** 30

    def __init__(self, net: nn.Module, distribution: Any, event_shape: tuple[int, ...], orders: np.ndarray,
                 conditioning: dict[str, dict[str, Any]], dense_output: bool, incremental: Any = None,
                 agnostic: bool = False, ordering_seed: int = 0) -> None:
        super().__init__()
        self.net = net
        self.distribution = distribution
        self.event_shape = tuple(event_shape)
        self.internal_shape = internal_shape_of(self.event_shape)
        self.video = len(self.event_shape) == 4
        orders = torch.as_tensor(np.asarray(orders), dtype=torch.long).reshape(-1, *self.internal_shape)
        self.register_buffer("orders", self.to_user(orders), persistent=False)
        self.conditioning = {name: dict(c) for name, c in conditioning.items()}
        self.dense_output = dense_output
        self.active_mask = 0
        self.incremental = incremental
        self.temperature = 1.0          # of the sampling in progress (read by the cached samplers)
        self.agnostic = agnostic
        self.ordering_seed = ordering_seed

    # -- layouts: the event as the spec writes it and as the network computes ------------------
    def to_internal(self, x: torch.Tensor) -> torch.Tensor:
        """(B, *event_shape, ...) -> (B, *internal_shape, ...): a video's frames and channels swap."""
        return x.transpose(1, 2) if self.video else x.reshape(x.shape[0], *self.internal_shape, *x.shape[1 + len(self.event_shape):])

    def to_user(self, x: torch.Tensor) -> torch.Tensor:
        """(B, *internal_shape, ...) -> (B, *event_shape, ...), the inverse of `to_internal`."""
        return x.transpose(1, 2) if self.video else x.reshape(x.shape[0], *self.event_shape, *x.shape[1 + len(self.internal_shape):])

    def user_params(self, out: torch.Tensor) -> torch.Tensor:
        """The network's parameter-major output (B, P * C, *spatial) as (B, *event_shape, P)."""
        out = out.reshape(out.shape[0], self.distribution.params_per_element, *self.internal_shape)
        return self.to_user(torch.movedim(out, 1, -1))

    def user_index(self) -> np.ndarray:
        """For every element in the network's flat (C order, internal) layout, its flat index in
        the user's layout: what static analysis calls element k is x.flatten()[user_index()[k]]."""
        n = int(np.prod(self.event_shape))
        flat = torch.arange(n).reshape(1, *self.event_shape)
        return self.to_internal(flat).reshape(-1).numpy()

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

    def forward(self, x: torch.Tensor, observed: torch.Tensor | None = None, **context: torch.Tensor) -> torch.Tensor:
        """Distribution parameters of every element: (B, *event_shape, P). An order-agnostic model
        also takes `observed` ((B or 1, *event_shape), 1 where an element is given; default: none
        is, so every element is predicted from nothing)."""
        x = x.to(self.device)
        context = self._check_context(context)
        raw = self.to_internal(x)
        if self.agnostic:
            shape = (x.shape[0], *self.event_shape)
            if observed is None:
                mask = torch.zeros(shape, device=self.device, dtype=self.dtype)
            elif tuple(observed.shape[1:]) != tuple(self.event_shape) or observed.shape[0] not in (1, x.shape[0]):
                raise ValueError(f"observed= must have shape (B or 1, *event_shape) = ({x.shape[0]} or 1, "
                                 f"{', '.join(map(str, self.event_shape))}), got {tuple(observed.shape)}")
            else:
                mask = observed.to(self.device, self.dtype).expand(shape)
            context = {**context, "observed": self.to_internal(mask)}
        elif observed is not None:
            raise ValueError("observed= is only for order-agnostic models (ordering: {type: agnostic})")
        return self.user_params(self.net(raw, self.distribution.encode(raw, self.dtype), context))

    def log_prob_elements(self, x: torch.Tensor, **context: torch.Tensor) -> torch.Tensor:
        """log p(x_e | earlier steps) for every element, natural log: (B, *event_shape)."""
        if self.agnostic:
            return self._agnostic_terms(x.to(self.device), self.order, context)
        return self.distribution.log_prob(self.forward(x, **context), x.to(self.device))

    def log_prob(self, x: torch.Tensor, ensemble: bool = False, orderings: int | None = None, **context: torch.Tensor) -> torch.Tensor:
        """log p(x) in nats, (B,). `ensemble=True` averages p over every mask set (MADE);
        `orderings=K` over K random orderings (order-agnostic models, seeded by the spec)."""
        if orderings is not None:
            return self._ordering_ensemble(x, orderings, context)
        if not ensemble or self.num_masks == 1:
            return self.log_prob_elements(x, **context).flatten(1).sum(dim=1)
        current = self.active_mask
        terms = []
        for m in range(self.num_masks):
            self.select_mask(m)
            terms.append(self.log_prob_elements(x, **context).flatten(1).sum(dim=1))
        self.select_mask(current)
        return torch.logsumexp(torch.stack(terms), dim=0) - math.log(len(terms))

    # -- order-agnostic models (Uria et al. 2014) -------------------------------------------------
    def _agnostic_terms(self, x: torch.Tensor, order: torch.Tensor, context: dict[str, torch.Tensor]) -> torch.Tensor:
        """log p(x_e | the elements before e in `order`), (B, *event_shape): one pass per step, the
        passes of several steps stacked in one batch (at most `agnostic_rows` rows)."""
        b = x.shape[0]
        steps = torch.unique(order)
        out = torch.zeros(x.shape, dtype=self.dtype, device=self.device)
        per_call = max(1, min(self.agnostic_rows, self.rows_within()) // max(1, b))
        shape = (-1,) + (1,) * order.dim()
        for i in range(0, len(steps), per_call):
            chunk = steps[i:i + per_call]
            k = len(chunk)
            observed = order.unsqueeze(0) < chunk.view(shape)                     # (k, *E)
            target = order.unsqueeze(0) == chunk.view(shape)
            xs = x.unsqueeze(0).expand(k, *x.shape).reshape(k * b, *x.shape[1:])
            obs = observed.unsqueeze(1).expand(k, b, *order.shape).reshape(k * b, *order.shape)
            ctx = {n: v.unsqueeze(0).expand(k, *v.shape).reshape(k * b, *v.shape[1:]) for n, v in context.items()}
            lp = self.distribution.log_prob(self.forward(xs, observed=obs, **ctx), xs).reshape(k, b, *order.shape)
            out = out + torch.where(target.unsqueeze(1), lp, torch.zeros((), dtype=lp.dtype, device=lp.device)).sum(0)
        return out

    def row_bytes(self) -> int:
        """Bytes one item (one row) of a forward pass may hold at most: every value of the network
        at this dtype (values are dropped after their last use, so the peak is lower)."""
        positions = int(np.prod(self.internal_shape[1:])) if len(self.internal_shape) > 1 else 1
        channels = sum(int(getattr(c, "channels", 0)) for c in getattr(self.net, "calls", []))
        itemsize = torch.finfo(self.dtype).bits // 8 if self.dtype.is_floating_point else 8
        return max(1, (channels + 2 * self.internal_shape[0]) * positions * itemsize)

    def rows_within(self, budget: int | None = None) -> int:
        """How many rows a batched evaluation call may stack within the memory budget."""
        return max(1, int(budget or self.memory_budget) // self.row_bytes())

    def log_prob_in_order(self, x: torch.Tensor, order: torch.Tensor, **context: torch.Tensor) -> torch.Tensor:
        """Order-agnostic models: the exact log p(x) in nats, (B,), for the ordering `order` (the
        generation step of each element, event-shaped; elements sharing a step are predicted
        together)."""
        if not self.agnostic:
            raise ValueError("log_prob_in_order is for order-agnostic models; other models have their ordering built in")
        order = torch.as_tensor(order, device=self.device).reshape(self.event_shape)
        return self._agnostic_terms(x.to(self.device), order, context).flatten(1).sum(1)

    def evaluation_orders(self, count: int) -> torch.Tensor:
        """`count` orderings (steps per element): the model's own first, then random ones drawn
        with the spec's seed, the same on every call."""
        gen = torch.Generator().manual_seed(int(self.ordering_seed))
        n = self.order.numel()
        rows = [self.order.reshape(-1).cpu()]
        for _ in range(count - 1):
            perm = torch.randperm(n, generator=gen)
            step = torch.empty(n, dtype=torch.long)
            step[perm] = torch.arange(n)
            rows.append(step)
        return torch.stack(rows[:count]).reshape(count, *self.event_shape).to(self.device)

    def _ordering_ensemble(self, x: torch.Tensor, count: int, context: dict[str, torch.Tensor]) -> torch.Tensor:
        """log of p(x) averaged over `count` orderings (Uria et al. 2014's ensembles)."""
        if not self.agnostic:
            raise ValueError("orderings= is for order-agnostic models; a model with several mask sets averages with ensemble=True")
        if count < 1:
            raise ValueError(f"orderings must be at least 1, got {count}")
        x = x.to(self.device)
        terms = [self._agnostic_terms(x, o, context).flatten(1).sum(1) for o in self.evaluation_orders(count)]
        return torch.logsumexp(torch.stack(terms), dim=0) - math.log(count)

    def agnostic_loss(self, x: torch.Tensor, generator: torch.Generator | None = None, **context: torch.Tensor) -> torch.Tensor:
        """The order-agnostic training loss per item, (B,): an ordering and a number d of observed
        elements drawn uniformly (d in 0..D-1), then D / (D - d) times the negative log-likelihood
        summed over the unobserved elements. Its expectation is the average over orderings of
        -log p(x | ordering) (Uria et al. 2014; proved by enumeration in tests/test_agnostic.py)."""
        x = x.to(self.device)
        b, n = x.shape[0], self.order.numel()
        device = generator.device if generator is not None else self.device
        rank = torch.argsort(torch.rand(b, n, generator=generator, device=device), dim=1).argsort(dim=1).to(self.device)
        d = torch.randint(0, n, (b, 1), generator=generator, device=device).to(self.device)
        return self.agnostic_loss_given(x, (rank < d).reshape(x.shape), **context)

    def agnostic_loss_given(self, x: torch.Tensor, observed: torch.Tensor, **context: torch.Tensor) -> torch.Tensor:
        """The order-agnostic loss for given masks (B, *event_shape), d = how many are observed:
        D / (D - d) times the negative log-likelihood summed over the unobserved elements."""
        n = self.order.numel()
        observed = observed.to(self.device, torch.bool)
        d = observed.flatten(1).sum(1)
        lp = self.distribution.log_prob(self.forward(x, observed=observed, **context), x.to(self.device))
        unobserved = torch.where(observed, torch.zeros((), dtype=lp.dtype, device=lp.device), lp).flatten(1).sum(1)
        return -unobserved * (n / (n - d).to(lp.dtype))

    def training_loss(self, x: torch.Tensor, **context: torch.Tensor) -> torch.Tensor:
        """What training minimises, per item (B,): -log p(x), or the order-agnostic loss."""
        if self.agnostic:
            return self.agnostic_loss(x, **context)
        x = x.to(self.device)
        raw = self.to_internal(x)
        encoded = self.distribution.encode(raw, self.dtype)
        out = self.net(raw, encoded, self._check_context(context))
        terms = self.distribution.nll_terms(out, raw, encoded)        # summed: the network's layout will do
        if terms is None:
            terms = self.distribution.nll(self.user_params(out), x)
        return terms.sum(dim=tuple(range(1, terms.dim())))

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
        return self._draw_uniforms(n, count, generator).to(self.device)

    def uniforms_ahead(self, n: int, count: int, generator: torch.Generator | None) -> torch.Tensor:
        """(count, n, 1, noise): exactly what `count` successive `uniforms(n, 1, generator)` calls
        draw, moved to the model's device in one copy (the static sampler draws a chunk ahead)."""
        return torch.stack([self._draw_uniforms(n, 1, generator) for _ in range(count)]).to(self.device)

    def _draw_uniforms(self, n: int, count: int, generator: torch.Generator | None) -> torch.Tensor:
        """(n, count, noise) uniforms on the generator's device (the model's without one)."""
        device = generator.device if generator is not None else self.device
        return torch.rand((n, count, self.distribution.noise_per_element), generator=generator, device=device)

    def completion_is_exact(self, known: torch.Tensor) -> bool:
        """Whether every known element comes before every unknown one in the order: then completion
        draws from p(unknown | known) exactly; otherwise known elements are clamped (approximate)."""
        known = known.to(self.device, torch.bool).reshape(self.event_shape)
        if self.agnostic or known.all() or not known.any():
            return True
        return bool(self.order[known].max() < self.order[~known].min())

    def sampling_path(self, known: torch.Tensor | None = None) -> str:
        """How `sample` will run, in one line: the cached engine, or naive sampling and why."""
        if self.agnostic:
            return "one pass per step (order-agnostic models condition on any set of given elements)"
        if self.incremental is None:
            return f"naive: one full pass per step ({getattr(self, 'no_cache_reason', '') or 'no cached sampler'})"
        describe = getattr(self.incremental, "describe", None)
        if describe is None:
            return "cached: the ordered scan"
        keep = None if known is None else self.to_internal(known.to(self.device, torch.bool).reshape(1, *self.event_shape))[0]
        return describe(self, keep)

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
            if self.agnostic:
                return self._sample_agnostic(x, keep, generator, context)
            if cache and self.incremental is not None:
                inner_keep = None if keep is None else self.to_internal(keep.unsqueeze(0))[0]
                return self.to_user(self.incremental(self, self.to_internal(x), inner_keep, generator, context))
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

    def _sample_agnostic(self, x: torch.Tensor, keep: torch.Tensor | None, generator: torch.Generator | None,
                         context: dict[str, torch.Tensor]) -> torch.Tensor:
        """Generate the elements not kept in the model's ordering, each step conditioned on
        everything given so far: exact completion for any set of known elements."""
        n = x.shape[0]
        given = keep if keep is not None else torch.zeros(self.event_shape, dtype=torch.bool, device=self.device)
        for step in self.steps():
            u = self.uniforms(n, int(step.sum()), generator)
            observed = (given | (self.order < self.order[step].min())).expand(n, *self.event_shape)
            params = self.distribution.tempered(self.forward(x, observed=observed, **context), self.temperature)
            values = self.distribution.sample_step(params, x, step, u).to(x.dtype)
            x[:, step] = torch.where(given[step], x[:, step], values)
        return x
