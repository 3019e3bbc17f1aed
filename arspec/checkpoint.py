"""Checkpoints: one safetensors file holding the weights, the optimizer state and, as metadata,
the spec's YAML text, its overrides, the backend, the learning-rate scheduler's state and the
training state. Written atomically (temp file + rename) and read back without pickle. Weights are
stored under their canonical names (`model.net.<node>__<call>__<param>`), so a checkpoint loads
into any backend."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from arspec.ir.graph import SpecSource

_MODEL = "model."
_OPTIM = "optimizer."


def _optimizer_tensors(optimizer: torch.optim.Optimizer | None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if optimizer is None:
        return {}, {}
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{_OPTIM}{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def save_checkpoint(path: str | Path, model: Any, source: SpecSource, meta: dict[str, Any],
                    optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None,
                    extra_tensors: dict[str, torch.Tensor] | None = None, backend: str = "torch") -> Path:
    """Write `path` atomically: weights, optimizer and scheduler state, the spec and `meta` (JSON)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"{_MODEL}{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    optim_tensors, optim_meta = _optimizer_tensors(optimizer)
    tensors.update(optim_tensors)
    for k, v in (extra_tensors or {}).items():
        tensors[k] = v.detach().cpu().contiguous()
    metadata = {
        "format": "arspec-checkpoint-1",
        "spec": source.text,
        "overrides": json.dumps(list(source.overrides)),
        "backend": backend,
        "meta": json.dumps(meta),
        "optimizer": json.dumps(optim_meta),
        "scheduler": json.dumps(scheduler.state_dict() if scheduler is not None else {}),
    }
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors and the metadata of a checkpoint file."""
    path = resolve(path)
    tensors = {}
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
        for key in f.keys():
            tensors[key] = f.get_tensor(key)
    if metadata.get("format") != "arspec-checkpoint-1":
        raise ValueError(f"{path} is not an arspec checkpoint")
    return tensors, metadata


def resolve(path: str | Path) -> Path:
    """A checkpoint file, or the best (else last) one inside a training folder."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.safetensors", "last.safetensors"):
            if (path / name).exists():
                return path / name
        raise FileNotFoundError(f"no checkpoint in {path} (expected best.safetensors or last.safetensors)")
    if not path.exists():
        raise FileNotFoundError(f"no such checkpoint: {path}")
    return path


def load_model(path: str | Path, device: Any = "cpu", backend: str | None = None) -> Any:
    """Rebuild the model from the checkpoint alone: spec text -> compile (with the backend it was
    trained with, unless another is named) -> weights."""
    from arspec import compile, parse_spec
    tensors, metadata = read_checkpoint(path)
    spec = parse_spec(metadata["spec"], filename=f"{resolve(path)}#spec", overrides=json.loads(metadata.get("overrides", "[]")))
    model: Any = compile(spec, backend=backend or metadata.get("backend", "torch"), device="cpu")
    prefix = "ema." if any(k.startswith("ema.") for k in tensors) else _MODEL   # EMA weights when trained with EMA
    state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    model.load_state_dict(state)
    model.checkpoint_meta = json.loads(metadata.get("meta", "{}"))
    model.spec = spec
    return model.to(device)


def load_scheduler_state(path: str | Path, scheduler: Any) -> None:
    """Restore a learning-rate scheduler saved by save_checkpoint (not replayed step by step)."""
    _, metadata = read_checkpoint(path)
    state = json.loads(metadata.get("scheduler", "{}"))
    if state:
        scheduler.load_state_dict(state)


def load_optimizer_state(path: str | Path, optimizer: torch.optim.Optimizer) -> None:
    """Restore an optimizer saved by save_checkpoint."""
    tensors, metadata = read_checkpoint(path)
    info = json.loads(metadata.get("optimizer", "{}"))
    if not info:
        return
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(_OPTIM):
            pid, name = key[len(_OPTIM):].split(".", 1)
            state.setdefault(int(pid), {})[name] = value
    for key, value in info.get("scalars", {}).items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": info["param_groups"]})
