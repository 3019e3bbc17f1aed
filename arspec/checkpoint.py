"""Checkpoints: one safetensors file holding the weights, the optimizer state (in `last` files
only) and, as metadata, the spec's YAML text, its overrides, the backend it was trained with, the
learning-rate scheduler's state, the training state and a SHA-256 digest of everything else.
Written atomically (temp file, fsync, rename, fsync of the folder), read back without pickle, the
digest verified. Weights are stored under their canonical names (`model.net.<node>__<call>__<param>`),
so a checkpoint loads into any backend.

A checkpoint is data, never code: loading one parses its spec with the safe loader and builds the
model with the torch interpreter, whatever backend its metadata names (only the caller chooses
another, e.g. `backend="torch-codegen"`)."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from arspec.fileio import write_with
from arspec.ir.graph import SpecSource

_MODEL = "model."
_OPTIM = "optimizer."
FORMAT = "arspec-checkpoint-2"          # 2: with a digest; 1 (no digest) is still read
_FORMATS = ("arspec-checkpoint-1", FORMAT)
_DIGEST = "digest"
LOADING_BACKEND = "torch"               # what a checkpoint is built with unless the caller names another


def digest(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """SHA-256 of every tensor (name, dtype, shape, bytes) and every metadata entry but the digest."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    for key in sorted(metadata):
        if key != _DIGEST:
            h.update(f"{key}\0{metadata[key]}\0".encode())
    return h.hexdigest()


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
    """Write `path` atomically: weights, optimizer and scheduler state, the spec and `meta` (JSON),
    with a digest of it all. Nothing at `path` changes until the new file is complete on disk."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"{_MODEL}{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    optim_tensors, optim_meta = _optimizer_tensors(optimizer)
    tensors.update(optim_tensors)
    for k, v in (extra_tensors or {}).items():
        tensors[k] = v.detach().cpu().contiguous()
    metadata = {
        "format": FORMAT,
        "spec": source.text,
        "overrides": json.dumps(list(source.overrides)),
        "backend": backend,
        "meta": json.dumps(meta),
        "optimizer": json.dumps(optim_meta),
        "scheduler": json.dumps(scheduler.state_dict() if scheduler is not None else {}),
    }
    metadata[_DIGEST] = digest(tensors, metadata)
    write_with(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
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
    if metadata.get("format") not in _FORMATS or "spec" not in metadata:
        raise CheckpointError(f"{path}: a safetensors file, but not an arspec checkpoint (no arspec metadata)")
    if metadata["format"] != "arspec-checkpoint-1" and metadata.get(_DIGEST) != digest(tensors, metadata):
        raise CheckpointError(f"{path}: damaged: its contents do not match the digest written with it "
                              "(a changed byte in the weights or the metadata)")
    return tensors, metadata


def metadata_json(path: str | Path, metadata: dict[str, str], key: str, default: Any, kind: type = dict) -> Any:
    """One JSON entry of a checkpoint's metadata, of type `kind` (a CheckpointError naming the
    file and the entry otherwise)."""
    text = metadata.get(key)
    if text is None:
        return default
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise CheckpointError(f"{path}: its metadata entry {key!r} is not valid JSON") from None
    if not isinstance(value, kind):
        raise CheckpointError(f"{path}: its metadata entry {key!r} is not a {'mapping' if kind is dict else kind.__name__}")
    return value


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
    """Rebuild the model from the checkpoint alone: spec text -> compile (with the torch
    interpreter, unless the caller names another backend: a checkpoint never chooses what runs) ->
    weights; in eval mode. In a training folder a damaged best checkpoint falls back to the last
    one (`model.checkpoint_note` says so). `overrides` change the spec where the weights do not
    depend on it (a longer event for a convolutional model)."""
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


def spec_of(file: Path, metadata: dict[str, str], overrides: Sequence[str] = ()) -> Any:
    """The spec a checkpoint was written from (its overrides, then `overrides`), parsed safely."""
    from arspec import parse_spec
    from arspec.errors import SpecError
    saved = metadata_json(file, metadata, "overrides", [], list)
    if not all(isinstance(o, str) for o in saved):
        raise CheckpointError(f"{file}: its metadata entry 'overrides' is not a list of strings")
    try:
        return parse_spec(metadata["spec"], filename=f"{file}#spec", overrides=[*saved, *overrides])
    except SpecError as err:
        raise CheckpointError(f"{file}: its spec does not load ({str(err).splitlines()[0]})") from None


def weights_of(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's weights in a checkpoint: the averaged ones when it was trained with EMA."""
    prefix = "ema." if any(k.startswith("ema.") for k in tensors) else _MODEL
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _load_file(file: Path, backend: str | None, overrides: Sequence[str] = ()) -> Any:
    from arspec import compile
    tensors, metadata = read_checkpoint(file)
    spec = spec_of(file, metadata, overrides)
    meta = metadata_json(file, metadata, "meta", {})
    model: Any = compile(spec, backend=backend or LOADING_BACKEND, device="cpu")
    state = weights_of(tensors)
    bad = [(k, int((~torch.isfinite(v)).sum())) for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        name, count = bad[0]
        raise CheckpointError(f"{file}: {sum(c for _, c in bad):,} weights are not finite (first in {name.removeprefix('net.')}: "
                              f"{count:,}); the run diverged before this checkpoint was written")
    load_weights(model, state, file)
    model.checkpoint_meta = meta
    model.spec = spec
    return model


def load_weights(model: Any, state: dict[str, torch.Tensor], file: Path | str) -> None:
    """Load `state` into `model`, or a CheckpointError naming the first parameter that is missing,
    unexpected or of another shape (with both shapes)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if shapes:
        k = shapes[0]
        raise CheckpointError(f"{file}: the weights do not fit its spec: {k.removeprefix('net.')} is {tuple(state[k].shape)} in the "
                              f"checkpoint but {tuple(own[k].shape)} in the model ({len(shapes)} parameter(s) differ in shape; "
                              "a checkpoint of another spec, or overrides that change the weights?)")
    if missing or unexpected:
        which = (f"{missing[0].removeprefix('net.')} is missing from the checkpoint" if missing
                 else f"the checkpoint has {unexpected[0].removeprefix('net.')}, which the model has not")
        raise CheckpointError(f"{file}: the weights do not fit its spec: {which} "
                              f"({len(missing)} missing, {len(unexpected)} unexpected; a checkpoint of another spec?)")
    model.load_state_dict(state)


def load_scheduler_state(path: str | Path, scheduler: Any) -> None:
    """Restore a learning-rate scheduler saved by save_checkpoint (not replayed step by step)."""
    _, metadata = read_checkpoint(path)
    state = metadata_json(path, metadata, "scheduler", {})
    if state:
        scheduler.load_state_dict(state)


def load_optimizer_state(path: str | Path, optimizer: torch.optim.Optimizer) -> None:
    """Restore an optimizer saved by save_checkpoint."""
    tensors, metadata = read_checkpoint(path)
    info = metadata_json(path, metadata, "optimizer", {})
    if not info:
        raise CheckpointError(f"{path}: holds no optimizer state (only last.safetensors of a run does)")
    state: dict[int, dict[str, Any]] = {}
    try:
        for key, value in tensors.items():
            if key.startswith(_OPTIM):
                pid, name = key[len(_OPTIM):].split(".", 1)
                state.setdefault(int(pid), {})[name] = value
        for key, value in info.get("scalars", {}).items():
            pid, name = key.split(".", 1)
            state.setdefault(int(pid), {})[name] = value
        optimizer.load_state_dict({"state": state, "param_groups": info["param_groups"]})
    except (KeyError, ValueError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{path}: its optimizer state does not fit this run ({type(err).__name__}: {err})") from None
