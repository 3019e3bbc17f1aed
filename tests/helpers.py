"""Shared test helpers (the public ones live in arspec.testing)."""
from __future__ import annotations

import numpy as np
import torch

import arspec
from arspec.testing import assert_measured_equals_predicted, spec_from

__all__ = ["all_configurations", "assert_measured_equals_predicted", "compiled", "problems_of", "spec_from", "verified"]


def problems_of(text: str, overrides=()) -> list[str]:
    try:
        spec_from(text, overrides)
    except arspec.SpecError as err:
        return [str(p) for p in err.problems]
    return []


def verified(spec):
    """The static analysis of a spec that must pass it: its report, or a failure listing every error."""
    report = arspec.analyze(spec)
    assert report.ok, [str(e) for e in report.errors]
    return report


def compiled(spec, seed: int = 0):
    return arspec.compile(spec, seed=seed).eval()


def all_configurations(shape, classes: int) -> torch.Tensor:
    n = int(np.prod(shape))
    grids = torch.cartesian_prod(*[torch.arange(classes)] * n) if n > 1 else torch.arange(classes)[:, None]
    return grids.reshape(-1, *shape)
