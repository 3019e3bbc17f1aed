"""What the core knows about a spec's output distribution: how many parameters and uniform noise
values each element needs, whether data are class indices, and whether a pixel's channels are
coupled (PixelCNN++). The likelihoods themselves are a backend's business."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DistributionInfo:
    """A backend-neutral description of the per-element distribution."""

    kind: str                       # bernoulli | categorical | discretized_logistic_mixture | gaussian_mixture | laplace_mixture | logistic_mixture
    params_per_element: int
    noise_per_element: int          # uniforms drawn per element when sampling
    discrete: bool
    classes: int | None
    mixtures: int = 0
    coupled_channels: int = 0       # > 0: one mixture per pixel over this many coupled channels
    quantization: str = "none"
    min_scale: float = 0.0          # real-valued mixtures: the lower bound of a component's scale

    @property
    def couples_channels(self) -> bool:
        return self.coupled_channels > 0


def describe_distribution(spec: Any, channels: int = 1) -> DistributionInfo:
    """The distribution of a spec's `distribution` section (`channels`: the event's channels)."""
    kind = spec.type
    if kind == "bernoulli":
        return DistributionInfo(kind, 1, 1, True, 2)
    if kind == "categorical":
        return DistributionInfo(kind, spec.classes, spec.classes, True, spec.classes, quantization=spec.quantization)
    if kind == "discretized_logistic_mixture":
        k = spec.mixtures
        coupled = channels if spec.coupled else 0
        extra = k * (channels - 1) if spec.coupled else 0
        return DistributionInfo(kind, 3 * k + extra, k + 1, True, spec.classes, k, coupled)
    if kind in ("gaussian_mixture", "laplace_mixture", "logistic_mixture"):
        return DistributionInfo(kind, 3 * spec.mixtures, spec.mixtures + 1, False, None, spec.mixtures, min_scale=spec.min_scale)
    raise ValueError(f"unknown distribution {kind!r}")
