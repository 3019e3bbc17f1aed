"""Checkpoints: one safetensors file holding the weights, the optimizer state and, as metadata,
the spec's YAML text, its overrides, the backend, the learning-rate scheduler's state and the
training state. Written atomically (temp file + rename) and read back without pickle. Weights are
stored under their canonical names (`model.net.<node>__<call>__<param>`), so a checkpoint loads
into any backend."""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
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


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, truncated, corrupted, not arspec's, or with
    non-finite weights. The message names the file and what is wrong."""


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors and the metadata of one checkpoint file (a folder means its best or last file)."""
    path = resolve(path)
    tensors = {}
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            for key in f.keys():
                tensors[key] = f.get_tensor(key)
    except Exception as err:   # safetensors raises several kinds for damaged files
        raise CheckpointError(f"{path}: not a readable checkpoint (damaged or truncated? {type(err).__name__}: {err})") from None
    if metadata.get("format") != "arspec-checkpoint-1" or "spec" not in metadata:
        raise CheckpointError(f"{path}: a safetensors file, but not an arspec checkpoint (no arspec metadata)")
    return tensors, metadata


def candidates(path: str | Path) -> list[Path]:
    """The files to try, in order: a file itself, or a training folder's best then last checkpoint."""
    path = Path(path)
    if path.is_dir():
        found = [path / name for name in ("best.safetensors", "last.safetensors") if (path / name).exists()]
        if not found:
            raise CheckpointError(f"{path}: no checkpoint in this folder (expected best.safetensors or last.safetensors)")
        return found
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    if path.suffix in (".yaml", ".yml"):
        raise CheckpointError(f"{path}: a spec, not a checkpoint (train it with `arspec train {path} --out DIR`, then pass DIR)")
    return [path]


def resolve(path: str | Path) -> Path:
    """A checkpoint file, or the best (else last) one inside a training folder."""
    return candidates(path)[0]


def load_model(path: str | Path, device: Any = "cpu", backend: str | None = None, overrides: Sequence[str] = ()) -> Any:
    """Rebuild the model from the checkpoint alone: spec text -> compile (with the backend it was
    trained with, unless another is named) -> weights; in eval mode. In a training folder a damaged
    best checkpoint falls back to the last one (`model.checkpoint_note` says so). `overrides` change
    the spec where the weights do not depend on it (a longer event for a convolutional model)."""
    files = candidates(path)
    notes: list[str] = []
    failures: list[str] = []
    for i, file in enumerate(files):
        try:
            model = _load_file(file, backend, overrides)
        except CheckpointError as err:
            failures.append(str(err))
            if i + 1 == len(files):
                if len(failures) == 1:
                    raise
                raise CheckpointError(f"{path}: no usable checkpoint: " + "; ".join(failures)) from None
            notes.append(f"{err}; using {files[i + 1].name} instead")
            continue
        model.checkpoint_path = file
        model.checkpoint_note = "; ".join(notes)
        return model.to(device).eval()
    raise CheckpointError(f"{path}: no usable checkpoint")


def _load_file(file: Path, backend: str | None, overrides: Sequence[str] = ()) -> Any:
    from arspec import compile, parse_spec
    from arspec.errors import SpecError
    tensors, metadata = read_checkpoint(file)
    try:
        spec = parse_spec(metadata["spec"], filename=f"{file}#spec", overrides=[*json.loads(metadata.get("overrides", "[]")), *overrides])
    except (SpecError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{file}: its spec does not load ({str(err).splitlines()[0]})") from None
    model: Any = compile(spec, backend=backend or metadata.get("backend", "torch"), device="cpu")
    prefix = "ema." if any(k.startswith("ema.") for k in tensors) else _MODEL   # EMA weights when trained with EMA
    state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    bad = [(k, int((~torch.isfinite(v)).sum())) for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        name, count = bad[0]
        raise CheckpointError(f"{file}: {sum(c for _, c in bad):,} weights are not finite (first in {name.removeprefix('net.')}: "
                              f"{count:,}); the run diverged before this checkpoint was written")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{file}: the weights do not fit its spec ({str(err).splitlines()[0]})") from None
    model.checkpoint_meta = json.loads(metadata.get("meta", "{}"))
    model.spec = spec
    return model


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
