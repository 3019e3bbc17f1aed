"""arspec — a declarative compiler for autoregressive generative models.

    spec   = arspec.load_spec("specs/made.yaml")
    report = arspec.analyze(spec)          # static proof of the autoregressive property
    model  = arspec.compile(spec)          # a trainable torch module (ARModel)
"""
from __future__ import annotations

from typing import Any

from arspec.analysis.report import Report, analyze
from arspec.backends import Backend, available_backends, get_backend
from arspec.errors import Location, Problem, SpecError
from arspec.spec.load import load_spec, parse_spec
from arspec.spec.nodes import ModelSpec

__version__ = "0.1.0"


def compile(spec: ModelSpec, backend: str = "torch", device: Any = "cpu", **options: Any):
    """Compile a spec into an ARModel with the named backend (found through entry points)."""
    return get_backend(backend).compile(spec, device=device, **options)


def load_model(path, device: Any = "cpu"):
    """Rebuild a trained model from a checkpoint folder or file (safetensors + spec, no pickle)."""
    from arspec.checkpoint import load_model as _load
    return _load(path, device=device)


__all__ = [
    "Backend", "Location", "ModelSpec", "Problem", "Report", "SpecError", "analyze", "available_backends",
    "compile", "load_model", "load_spec", "parse_spec",
]
