"""arspec — a declarative compiler for autoregressive generative models.

    spec   = arspec.load_spec("specs/made.yaml")
    report = arspec.analyze(spec)          # static proof of the autoregressive property
    model  = arspec.compile(spec)          # a trainable module (ARModel) from a backend

Importing arspec loads no deep-learning framework: backends do, when a model is compiled."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from arspec.allocator import tune_allocator
from arspec.analysis.report import Report, analyze
from arspec.backends import ARModel, Backend, CompileOptions, available_backends, compile_composite, compile_ir, get_backend
from arspec.composite.models import CompositeSpec
from arspec.errors import Location, Problem, SpecError
from arspec.loader import load_spec, parse_spec
from arspec.spec.models import ModelSpec

__version__ = "0.2.0"


def compile(spec: ModelSpec | CompositeSpec, backend: str = "torch", device: Any = "cpu", dtype: Any = None,
            seed: int | None = None) -> ARModel:
    """Compile a spec into an ARModel with the named backend (found through entry points); a spec
    of several parts into the backend's latent-variable model (its `.decoder` is an ARModel)."""
    options = CompileOptions(device=device, dtype=dtype, seed=seed)
    if isinstance(spec, CompositeSpec):
        return compile_composite(spec.ir, backend, options)
    return compile_ir(spec.ir, backend, options)


def export(spec: ModelSpec, backend: str = "torch-codegen", fast_sampler: bool = False) -> str:
    """The source of a standalone module for the spec, from a code-generating backend: plain
    PyTorch, or with `fast_sampler` also its cached samplers."""
    from arspec.backends import BackendError
    chosen = get_backend(backend)
    if chosen.export is None:
        raise BackendError(f"backend {backend!r} does not generate code")
    return chosen.export(spec.ir, fast_sampler=fast_sampler) if fast_sampler else chosen.export(spec.ir)


def load_model(path: str | Path, device: Any = "cpu", backend: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """Rebuild a trained model from a checkpoint folder or file (safetensors + spec, no pickle);
    `overrides` (e.g. a longer event) apply where the weights do not depend on them."""
    from arspec.checkpoint import load_model as _load
    return _load(path, device=device, backend=backend, overrides=overrides)


def verify(module: Any, event_shape: Any, **options: Any) -> Any:
    """Prove a hand-written PyTorch module autoregressive (docs/verify.md): every element of the
    event checked exactly, batch coupling, blind spots, optionally a cache (`step=`). Options:
    input, output, order, strict, mode, step, event_axes, blind, seed, picture."""
    from arspec.verification import verify as _verify
    return _verify(module, event_shape, **options)


__all__ = [
    "ARModel", "Backend", "CompileOptions", "CompositeSpec", "Location", "ModelSpec", "Problem", "Report", "SpecError", "analyze",
    "available_backends", "compile", "export", "load_model", "load_spec", "parse_spec", "tune_allocator", "verify",
]
