"""Helpers for testing models and ops (arspec's own tests and plugins' use them): parse inline
specs, and check that a compiled module reads exactly what the static analysis predicts."""
from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

import arspec
from arspec.dynamic import dynamic_check


def spec_from(text: str, overrides: Sequence[str] = ()) -> Any:
    """A spec parsed from (indented) YAML text, named test.yaml in messages."""
    return arspec.parse_spec(textwrap.dedent(text), filename="test.yaml", overrides=overrides)


def assert_measured_equals_predicted(spec: Any, seed: int = 0, backend: str = "torch") -> None:
    """The compiled module's dependencies (float64, eval, exact) equal the static prediction."""
    model = arspec.compile(spec, backend=backend, seed=seed).eval()
    result = dynamic_check(spec, model, trials=3, seed=seed)
    assert result.agrees, f"missing={result.missing[:5]} unexpected={result.unexpected[:5]}"
