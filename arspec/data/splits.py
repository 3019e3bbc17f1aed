"""Splits: the items of train/validation/test, the context arrays that go with them (named after
the spec's conditioning), and a vocabulary when the items are text tokens."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

SPLITS = ("train", "validation", "test")


class DataError(ValueError):
    """Data that cannot be used with this spec (missing, wrong shape or range)."""


@dataclass
class Splits:
    """Items per split; `contexts[split][name]` holds one context row per item."""

    train: torch.Tensor
    validation: torch.Tensor
    test: torch.Tensor
    name: str
    contexts: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    vocab: list[str] | None = None

    def split(self, name: str) -> torch.Tensor:
        return {"train": self.train, "validation": self.validation, "test": self.test}[name]

    def context(self, spec: Any, split: str) -> dict[str, torch.Tensor]:
        """Context tensors for the spec's conditioning, per item of `split` (checked)."""
        problems = self.context_problems(spec)
        if problems:
            raise DataError(f"{self.name}: " + "; ".join(problems))
        return {name: self.contexts[split][name] for name in spec.conditioning}

    def context_problems(self, spec: Any) -> list[str]:
        """Every mismatch between the data's context arrays and the spec's conditioning."""
        out = []
        from arspec.ordering import internal_event
        spatial = internal_event(spec.event.shape)[1:]
        for name, cond in spec.conditioning.items():
            for split in SPLITS:
                value = self.contexts.get(split, {}).get(name)
                items = len(self.split(split))
                if value is None:
                    have = sorted(self.contexts.get(split, {}))
                    out.append(f"no context {name!r} for the {split} split (the spec conditions on it; the data have "
                               f"{', '.join(have) or 'none'}: name arrays {split}_{name})")
                    break
                if len(value) != items:
                    out.append(f"context {split}_{name} has {len(value)} rows for {items} items")
                elif cond.type == "global":
                    out += _global_problems(f"{split}_{name}", value, cond.classes)
                else:
                    low = [s // cond.upsample for s in spatial]
                    if list(value.shape[1:]) != [cond.channels, *low]:
                        out.append(f"context {split}_{name} has items of shape {list(value.shape[1:])}; conditioning {name!r} "
                                   f"needs [{cond.channels}, {', '.join(map(str, low))}] (channels, then the event's size / upsample {cond.upsample})")
        return out


def _global_problems(label: str, value: torch.Tensor, classes: int) -> list[str]:
    if value.dim() != 1 or value.dtype.is_floating_point:
        return [f"context {label} must hold one integer class per item, got shape {list(value.shape)} of {value.dtype}"]
    lo, hi = int(value.min()), int(value.max())
    if lo < 0 or hi >= classes:
        return [f"context {label} holds classes {lo}..{hi}; the conditioning has {classes} classes (0..{classes - 1})"]
    return []
