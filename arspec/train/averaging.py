"""The exponential moving average of the weights that `training.ema` asks for, with a warm-up."""
from __future__ import annotations

import copy

import torch
from torch import nn


def warmed_decay(decay: float, updates: int) -> float:
    """The decay of update number `updates` (0 first): min(decay, (1 + n) / (10 + n)). Early
    averages follow the weights instead of holding the initial ones, which a fixed decay of 0.999
    would keep at weight 0.999^n: a run shorter than a few thousand steps would otherwise be
    validated, checkpointed and sampled with weights close to its random start."""
    return min(decay, (1.0 + updates) / (10.0 + updates))


class WeightAverage:
    """A copy of a model whose parameters follow the model's by an exponential moving average.
    Buffers (masks, orderings) stay the copy's own; the caller passes the update count (the
    training step), so a resumed run continues the same average from its checkpoint."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model)
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, updates: int) -> None:
        """Move the average towards the model's parameters by 1 - warmed_decay(decay, updates)."""
        averaged = list(self.module.parameters())
        current = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(averaged, current, 1.0 - warmed_decay(self.decay, updates))
