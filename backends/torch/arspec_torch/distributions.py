"""Per-element output distributions in torch: how data is fed to the graph, the log-likelihood,
and sampling from uniform noise (so cached and naive samplers that draw the same uniforms give the
same samples). Imports nothing from arspec: generated standalone files carry a copy."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class Distribution:
    """Base: `params` has shape (B, *E, P); data `x` has shape (B, *E)."""

    params_per_element: int
    noise_per_element: int
    discrete: bool
    classes: int | None

    def encode(self, x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The float tensor the graph reads as x."""
        raise NotImplementedError

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log_prob: what training minimises. Distributions with a fused loss override it (one
        pass, and no negated copy kept for the backward)."""
        return -self.log_prob(params, x)

    def nll_terms(self, out: torch.Tensor, raw: torch.Tensor, encoded: torch.Tensor) -> torch.Tensor | None:
        """-log p of every element straight from the network's parameter-major output
        (B, P * C, *S), given the data in the network's layout (`raw`, and `encoded` as the graph
        read it), the elements in any order: what a summed loss needs, without the layout changes
        to (B, *E, P). None where the distribution needs that layout."""
        return None

    def sample(self, params: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
        """uniforms: (B, *E, noise_per_element) in (0, 1)."""
        raise NotImplementedError

    #: the term of channel c at a position also reads the values of channels before c there, and
    #: the parameters of every channel there (PixelCNN++'s coupled means); the analysis adds that
    couples_channels = False
    #: how many leading parameters of an element are logits (what a sampling temperature divides)
    logits = 1

    def tempered(self, params: torch.Tensor, temperature: float) -> torch.Tensor:
        """The parameters with their logits divided by `temperature` (1: unchanged)."""
        if temperature == 1.0:
            return params
        return torch.cat([params[..., :self.logits] / temperature, params[..., self.logits:]], dim=-1)

    def sample_step(self, params: torch.Tensor, x: torch.Tensor, step: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
        """Values for the elements of one generation step (`step`: a boolean mask over the event),
        given every element's parameters (B, *E, P) and the current data x (B, *E)."""
        return self.sample(params[:, step], uniforms)

    def sample_channel(self, params: torch.Tensor, x: torch.Tensor, channel: int, uniforms: torch.Tensor) -> torch.Tensor:
        """`sample_step` for channel `channel` of one position, params (B, C, 1, P) and x (B, C, 1),
        by slicing instead of a boolean mask (no host synchronisation: it runs inside CUDA graphs)."""
        return self.sample(params[:, channel], uniforms)

    #: a discrete distribution whose every parameter is a logit can also draw in numpy, for the
    #: CPU's per-step plan (a torch dispatch costs more than the arithmetic at batch 1)
    draws_in_numpy = False

    def sample_numpy(self, logits: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
        """`sample` on numpy arrays: logits (B, P), uniforms (B, noise) -> class indices (B,)."""
        raise NotImplementedError

    def encode_numpy(self, x: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """`encode` on numpy class indices."""
        raise NotImplementedError

    #: the C step's draw of this distribution (0 categorical, 1 Bernoulli; None: none)
    c_draw: ClassVar[int | None] = None

    def c_encoding(self) -> tuple[float, float]:
        """`encode_numpy` as level * scale + offset, for the C step's draw."""
        return (1.0, 0.0)

    def noise_numpy(self, uniforms: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """The part of `sample_numpy` that reads only the uniforms (..., noise), done ahead for many
        draws at once; `sample_noise_numpy` finishes a draw from it."""
        return uniforms

    def sample_noise_numpy(self, logits: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """`sample_numpy` from `noise_numpy`'s output: the same values, bit for bit."""
        return self.sample_numpy(logits, noise)

    def validate(self, x: torch.Tensor) -> str | None:
        """Why `x` is not valid data for this distribution, or None."""
        if self.discrete:
            if x.dtype.is_floating_point:
                return f"expected integer class indices, got {x.dtype}"
            lo, hi = int(x.min()), int(x.max())
            if lo < 0 or hi >= self.classes:
                return f"values must lie in [0, {self.classes - 1}], got [{lo}, {hi}]"
        elif not x.dtype.is_floating_point:
            return f"expected real values, got {x.dtype}"
        return None


def _gumbel(u: torch.Tensor) -> torch.Tensor:
    return -torch.log(-torch.log(u.clamp(1e-12, 1 - 1e-7)))


class Bernoulli(Distribution):
    def __init__(self) -> None:
        super().__init__(1, 1, True, 2)

    def encode(self, x, dtype=torch.float32):
        return x.to(dtype)

    def log_prob(self, params, x):
        logits = params.squeeze(-1)          # a view whose backward is one too (indexing [..., 0] allocates a zero gradient)
        return -F.binary_cross_entropy_with_logits(logits, x.to(logits.dtype), reduction="none")

    def nll(self, params, x):
        logits = params.squeeze(-1)
        return F.binary_cross_entropy_with_logits(logits, x.to(logits.dtype), reduction="none")

    def nll_terms(self, out, raw, encoded):
        target = encoded if encoded.dtype == out.dtype else encoded.to(out.dtype)    # the data as 0/1 floats already
        if target.shape != out.shape:
            target = target.reshape(out.shape)             # the data's view, not the logits': nothing to undo in the backward
        return F.binary_cross_entropy_with_logits(out, target, reduction="none")

    def sample(self, params, uniforms):
        return (uniforms[..., 0] < torch.sigmoid(params[..., 0])).long()

    draws_in_numpy = True

    def sample_numpy(self, logits, uniforms):
        return (uniforms[:, 0] < 1.0 / (1.0 + np.exp(-logits[:, 0]))).astype(np.int64)

    def encode_numpy(self, x, dtype):
        return x.astype(dtype)

    c_draw = 1


class Categorical(Distribution):
    def __init__(self, classes: int) -> None:
        super().__init__(classes, classes, True, classes)
        self.logits = classes

    def encode(self, x, dtype=torch.float32):
        return x.to(dtype) * (2.0 / (self.classes - 1)) - 1.0

    def log_prob(self, params, x):
        return torch.log_softmax(params, dim=-1).gather(-1, x.long().unsqueeze(-1)).squeeze(-1)

    def nll(self, params, x):
        # class-major (B, K, *E): the network's own layout, so no copy; one fused log-softmax + pick
        return F.cross_entropy(params.movedim(-1, 1), x.long(), reduction="none")

    def nll_terms(self, out, raw, encoded):
        # parameter-major (B, K * C, *S) is class-major per channel: (B, K, C, *S) against raw (B, C, *S)
        return F.cross_entropy(out.reshape(out.shape[0], self.classes, *raw.shape[1:]), raw.long(), reduction="none")

    def sample(self, params, uniforms):
        return torch.argmax(params + _gumbel(uniforms.to(params.dtype)), dim=-1)

    draws_in_numpy = True

    def sample_numpy(self, logits, uniforms):
        u = np.clip(uniforms.astype(logits.dtype, copy=False), 1e-12, 1 - 1e-7)
        return np.argmax(logits - np.log(-np.log(u)), axis=-1)

    def noise_numpy(self, uniforms, dtype):                 # Gumbel noise, negated: logits + it = logits - log(-log u)
        return -np.log(-np.log(np.clip(uniforms.astype(dtype, copy=False), 1e-12, 1 - 1e-7)))

    def sample_noise_numpy(self, logits, noise):
        return np.argmax(logits + noise, axis=-1)

    c_draw = 0

    def c_encoding(self):
        return (2.0 / (self.classes - 1), -1.0)

    def encode_numpy(self, x, dtype):
        return x.astype(dtype) * dtype.type(2.0 / (self.classes - 1)) - dtype.type(1.0)


class DiscretizedLogisticMixture(Distribution):
    """Salimans et al. 2017: a mixture of logistics discretized to `classes` levels in [-1, 1].

    Parameters per element: K mixture logits, K means, K log-scales."""

    def __init__(self, classes: int, mixtures: int, extra: int = 0) -> None:
        super().__init__(3 * mixtures + extra, mixtures + 1, True, classes)
        self.mixtures = self.logits = mixtures

    def encode(self, x, dtype=torch.float32):
        return x.to(dtype) * (2.0 / (self.classes - 1)) - 1.0

    def _split(self, params):
        m = self.mixtures
        return params[..., :m], params[..., m:2 * m], params[..., 2 * m:3 * m].clamp(min=-7.0)

    def components(self, params: torch.Tensor, x: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per element: mixture logits, means and log-scales, each (..., K)."""
        return self._split(params)

    def component_log_probs(self, x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor) -> torch.Tensor:
        """log P(x | component k) of the discretized logistic, (..., K); the edge levels take the tails."""
        xs = self.encode(x, means.dtype).unsqueeze(-1)
        half = 1.0 / (self.classes - 1)
        inv = torch.exp(-log_scales)
        centered = xs - means
        cdf_plus = torch.sigmoid(inv * (centered + half))
        cdf_minus = torch.sigmoid(inv * (centered - half))
        log_cdf_plus = (inv * (centered + half)) - F.softplus(inv * (centered + half))
        log_one_minus_cdf_min = -F.softplus(inv * (centered - half))
        mid = inv * centered
        log_pdf_mid = mid - log_scales - 2.0 * F.softplus(mid)
        delta = (cdf_plus - cdf_minus).clamp(min=1e-12)
        log_mid = torch.where(delta > 1e-5, torch.log(delta), log_pdf_mid + math.log(2 * half))
        return torch.where(xs < -0.999, log_cdf_plus, torch.where(xs > 0.999, log_one_minus_cdf_min, log_mid))

    def log_prob(self, params, x):
        logits, means, log_scales = self.components(params, x)
        lp = self.component_log_probs(x, means, log_scales)
        return torch.logsumexp(lp + torch.log_softmax(logits, dim=-1), dim=-1)

    def sample(self, params, uniforms):
        return self._draw(*self.components(params, None), uniforms)

    def _draw(self, logits, means, log_scales, uniforms):
        k = torch.argmax(logits + _gumbel(uniforms[..., :self.mixtures].to(means.dtype)), dim=-1, keepdim=True)
        mean = means.gather(-1, k).squeeze(-1)
        scale = torch.exp(log_scales.gather(-1, k).squeeze(-1))
        u = uniforms[..., -1].to(means.dtype).clamp(1e-5, 1 - 1e-5)
        value = mean + scale * (torch.log(u) - torch.log1p(-u))
        return torch.round((value.clamp(-1, 1) + 1) * (self.classes - 1) / 2).long()


class CoupledLogisticMixture(DiscretizedLogisticMixture):
    """PixelCNN++'s pixel likelihood (Salimans et al. 2017, eq. 3): one mixture over the whole pixel,
    whose component k gives channel c the mean mu_ck + sum_{j<c} tanh(a_ckj) * x_j.

    Parameters of channel c: K logits (the pixel's mixture logits are their sum over channels), K
    means, K log-scales and (C-1) blocks of K coefficients (block j couples to channel j < c; later
    blocks are unused). Channel c's term is log p(x_c | x_<c of the pixel), with mixture weights
    updated by the earlier channels' values, so the terms sum to the pixel's joint log-likelihood.
    The network must give every channel of a pixel parameters that read only earlier pixels."""

    couples_channels = True

    def __init__(self, classes: int, mixtures: int, channels: int) -> None:
        super().__init__(classes, mixtures, mixtures * (channels - 1))
        self.channels = channels

    def components(self, params, x):
        """params (B, C, *S, P) and x (B, C, *S): the components of each channel given the
        earlier channels of its pixel. With x None only the first channel is meaningful."""
        k, c = self.mixtures, self.channels
        logits, means, log_scales = self._split(params)
        shared = logits.sum(dim=1, keepdim=True).expand_as(logits)
        if x is None or c == 1:
            return shared, means, log_scales
        coeffs = torch.tanh(params[..., 3 * k:]).unflatten(-1, (c - 1, k))        # (B, C, *S, C-1, K)
        xe = self.encode(x, params.dtype)                                          # (B, C, *S)
        shifted = [means[:, 0]]
        for i in range(1, c):
            mean = means[:, i]
            for j in range(i):
                mean = mean + coeffs[:, i, ..., j, :] * xe[:, j].unsqueeze(-1)
            shifted.append(mean)
        means = torch.stack(shifted, dim=1)
        lp = self.component_log_probs(x, means, log_scales)                        # (B, C, *S, K)
        before = torch.cat([torch.zeros_like(lp[:, :1]), torch.cumsum(lp[:, :-1], dim=1)], dim=1)   # sum over j < c
        return shared + before, means, log_scales

    def sample_step(self, params, x, step, uniforms):
        logits, means, log_scales = self.components(params, x)
        return self._draw(logits[:, step], means[:, step], log_scales[:, step], uniforms)

    def sample_channel(self, params, x, channel, uniforms):
        logits, means, log_scales = self.components(params, x)
        return self._draw(logits[:, channel], means[:, channel], log_scales[:, channel], uniforms)


class RealMixture(Distribution):
    """Real-valued elements (RNADE, Uria et al. 2013): a mixture of K location-scale densities.

    Parameters per element: K mixture logits, K means, K raw scales. The log-scale is bounded below
    smoothly, log s = log(min_scale) + softplus(raw - log(min_scale)), and capped at e^7, and the
    density is computed in log space throughout, so standardized data (or points far in the tails)
    never give NaN or an underflow to the same -inf for distinct points."""

    def __init__(self, mixtures: int, min_scale: float = 1e-3) -> None:
        super().__init__(3 * mixtures, mixtures + 1, False, None)
        self.mixtures = self.logits = mixtures
        self.log_min_scale = math.log(min_scale)

    def encode(self, x, dtype=torch.float32):
        return x.to(dtype)

    def components(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per element: mixture log-weights, means and log-scales, each (..., K)."""
        m = self.mixtures
        means, log_scales = self.locations_and_log_scales(params)
        return torch.log_softmax(params[..., :m], dim=-1), means, log_scales

    def locations_and_log_scales(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`components` without the mixture weights (a flow's one component needs none)."""
        m = self.mixtures
        return params[..., m:2 * m], (self.log_min_scale + F.softplus(params[..., 2 * m:] - self.log_min_scale)).clamp(max=7.0)

    def standard_log_density(self, z: torch.Tensor) -> torch.Tensor:
        """log density of the unit component at z."""
        raise NotImplementedError

    def standard_sample(self, u: torch.Tensor) -> torch.Tensor:
        """The unit component's quantile at u in (0, 1)."""
        raise NotImplementedError

    def log_prob(self, params, x):
        log_weights, means, log_scales = self.components(params)
        z = (x.to(params.dtype).unsqueeze(-1) - means) * torch.exp(-log_scales)
        return torch.logsumexp(log_weights + self.standard_log_density(z) - log_scales, dim=-1)

    def sample(self, params, uniforms):
        log_weights, means, log_scales = self.components(params)
        k = torch.argmax(log_weights + _gumbel(uniforms[..., :self.mixtures].to(params.dtype)), dim=-1, keepdim=True)
        u = uniforms[..., -1].to(params.dtype).clamp(1e-6, 1 - 1e-6)
        return means.gather(-1, k).squeeze(-1) + torch.exp(log_scales.gather(-1, k).squeeze(-1)) * self.standard_sample(u)


class GaussianMixture(RealMixture):
    """A mixture of Gaussians per element (RNADE-MoG)."""

    def standard_log_density(self, z):
        return -0.5 * z * z - 0.5 * math.log(2 * math.pi)

    def standard_sample(self, u):
        return math.sqrt(2.0) * torch.erfinv(2 * u - 1)


class LaplaceMixture(RealMixture):
    """A mixture of Laplace densities per element (RNADE-MoL)."""

    def standard_log_density(self, z):
        return -z.abs() - math.log(2.0)

    def standard_sample(self, u):
        return -torch.sign(u - 0.5) * torch.log1p(-2 * (u - 0.5).abs())


class LogisticMixture(RealMixture):
    """A mixture of logistic densities per element; with one component, an inverse autoregressive
    flow's shift (mean) and scale."""

    def standard_log_density(self, z):
        return -z - 2.0 * F.softplus(-z)

    def standard_sample(self, u):
        return torch.log(u) - torch.log1p(-u)


def build_distribution(kind: str, classes: int | None = None, mixtures: int = 0, coupled_channels: int = 0,
                       min_scale: float = 1e-3) -> Distribution:
    """The distribution of that kind (arspec.distributions.DistributionInfo's fields)."""
    if kind == "bernoulli":
        return Bernoulli()
    if kind == "categorical":
        assert classes is not None
        return Categorical(classes)
    if kind == "discretized_logistic_mixture":
        assert classes is not None
        if coupled_channels:
            return CoupledLogisticMixture(classes, mixtures, coupled_channels)
        return DiscretizedLogisticMixture(classes, mixtures)
    if kind == "gaussian_mixture":
        return GaussianMixture(mixtures, min_scale)
    if kind == "laplace_mixture":
        return LaplaceMixture(mixtures, min_scale)
    if kind == "logistic_mixture":
        return LogisticMixture(mixtures, min_scale)
    raise ValueError(f"unknown distribution {kind!r}")
