"""Shared test helpers: parse inline specs, compile small models, measure dependencies."""
from __future__ import annotations

import textwrap

import numpy as np
import torch

import arspec
from arspec.analysis.dynamic import dynamic_check


def spec_from(text: str, overrides=()):
    return arspec.parse_spec(textwrap.dedent(text), filename="test.yaml", overrides=overrides)


def problems_of(text: str, overrides=()) -> list[str]:
    try:
        spec_from(text, overrides)
    except arspec.SpecError as err:
        return [str(p) for p in err.problems]
    return []


def compiled(spec, seed: int = 0):
    return arspec.compile(spec, seed=seed).eval()


def assert_measured_equals_predicted(spec, seed: int = 0) -> None:
    """The compiled module's dependencies (float64, eval, exact) equal the static prediction."""
    model = compiled(spec, seed)
    result = dynamic_check(spec, model, trials=3, seed=seed)
    assert result.agrees, f"missing={result.missing[:5]} unexpected={result.unexpected[:5]}"


def all_configurations(shape, classes: int) -> torch.Tensor:
    n = int(np.prod(shape))
    grids = torch.cartesian_prod(*[torch.arange(classes)] * n) if n > 1 else torch.arange(classes)[:, None]
    return grids.reshape(-1, *shape)
