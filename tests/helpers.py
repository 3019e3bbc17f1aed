"""Shared test helpers (the public ones live in arspec.testing)."""
from __future__ import annotations

import numpy as np
import torch

import arspec
from arspec.testing import assert_measured_equals_predicted, spec_from

__all__ = ["all_configurations", "assert_measured_equals_predicted", "compiled", "compiled_for_engine", "engines_here", "problems_of",
           "spec_from", "verified"]


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


def engines_here() -> list[str]:
    """The cached-generation engines that run on this machine: the C step (where a compiler is),
    the numpy step, the static program and the torch path."""
    from arspec_torch import cstep
    return [e for e in ("c", "numpy", "static", "torch") if e != "c" or cstep.c_step_available(np.dtype(np.float64))]


def compiled_for_engine(spec, engine: str, monkeypatch):
    """The spec compiled in float64 with generic parameters (no dependency behind an exact zero),
    its cached generation forced onto `engine` where it has a plan."""
    from arspec.dynamic import generic_parameters
    monkeypatch.setenv("ARSPEC_STEP", "numpy" if engine == "numpy" else "c")
    model = arspec.compile(spec, seed=0, dtype=torch.float64).eval()
    generic_parameters(model, 0, spec.ir)
    if model.incremental is not None and model.incremental.plan is not None:
        model.incremental.engine = {"c": "plan", "numpy": "plan"}.get(engine, engine)
    return model
