"""Resolve `--data NAME_OR_PATH` to train/validation/test tensors (and context arrays) that fit a
spec, or a clear error.

Bundled (see bundled/README.md for sources and licences): binarized-mnist (the standard fixed
binarization of Larochelle & Murray, 50,000 / 10,000 / 10,000; the default for 1x28x28 binary
specs), binarized-mnist-5k (5,000 real MNIST digits with labels, binarized once with a fixed seed:
quick runs and class conditioning), mnist (the same 5,000 digits as 8-bit values), digits and
digits-binary (the UCI 8x8 digits, 17 levels / thresholded), speech (two CMU ARCTIC utterances),
red-wine[:K] (the RNADE papers' 10-fold red wine benchmark, standardised; test fold K, default 1),
python-stdlib (the Python standard library's .py sources as text, split by file), moving-mnist
(two MNIST digits bouncing in the frames of a video event, generated deterministically).
Yours: a .npz file, a .npy array of items (split 80/10/10), a folder of .npy files (with context arrays named after the conditioning,
see docs/data.md), text:FILE_OR_FOLDER, cifar10:PATH, wav:FOLDER, or the binarized MNIST .amat files."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from arspec.data.files import load_amat, load_npy_folder, load_npy_items, load_npz, split_indices
from arspec.data.splits import SPLITS, DataError, Splits
from arspec.distributions import DistributionInfo, describe_distribution
from arspec.ordering import internal_event
from arspec.spec.models import REAL_VALUED

BUNDLED = Path(__file__).resolve().parent / "bundled"
NAMES = ("binarized-mnist", "binarized-mnist-5k", "mnist", "digits", "digits-binary", "speech", "red-wine[:K]", "python-stdlib",
         "moving-mnist[:OPTIONS]")


def _bundled(name: str) -> dict[str, np.ndarray]:
    with np.load(BUNDLED / name, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def mnist_subset() -> tuple[np.ndarray, np.ndarray]:
    """5,000 real MNIST digits, (5000, 1, 28, 28) uint8, and their labels."""
    data = _bundled("mnist_5k.npz")
    return data["x"].reshape(-1, 1, 28, 28), data["y"]


def binarized_mnist() -> list[torch.Tensor]:
    """The standard binarized MNIST: train, valid, test as (N, 1, 28, 28) int64 in {0, 1}."""
    data = _bundled("binarized_mnist.npz")
    return [torch.as_tensor(np.unpackbits(data[k], axis=1)[:, :784].reshape(-1, 1, 28, 28).astype(np.int64))
            for k in ("train", "valid", "test")]


def binarize(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """Stochastic binarization (Salakhutdinov & Murray 2008), once, with a fixed seed."""
    return (np.random.default_rng(seed).random(x.shape) < x / 255.0).astype(np.int64)


def labelled(x: np.ndarray, y: np.ndarray, name: str) -> Splits:
    """A fixed 80/10/10 split with the class labels as a context named `label`."""
    parts = split_indices(len(x))
    return Splits(*[torch.as_tensor(x[i]) for i in parts], name,
                  {s: {"label": torch.as_tensor(y[i])} for s, i in zip(SPLITS, parts)})


def load_named(name: str, spec: Any) -> Splits:
    """The data of that name or path, unchecked (see load_data)."""
    if name == "binarized-mnist":
        return Splits(*binarized_mnist(), name)
    if name in ("binarized-mnist-5k", "mnist"):
        x, y = mnist_subset()
        return labelled(binarize(x) if name == "binarized-mnist-5k" else x.astype(np.int64), y, name)
    if name in ("digits", "digits-binary"):
        digits = _bundled("digits.npz")
        x = digits["x"].reshape(-1, 1, 8, 8).astype(np.int64)
        return labelled((x >= 8).astype(np.int64) if name == "digits-binary" else x, digits["y"], name)
    if name == "red-wine" or name.startswith("red-wine:"):
        from arspec.data.red_wine import parse_fold, red_wine
        return red_wine(parse_fold(name))
    if name.startswith("cifar10:"):
        from arspec.data.cifar import load_cifar10
        train, test = load_cifar10(Path(name.split(":", 1)[1]))
        n_val = max(1, len(train) // 10)
        return Splits(torch.as_tensor(train[n_val:]), torch.as_tensor(train[:n_val]), torch.as_tensor(test), name)
    if name == "speech" or name.startswith("wav:"):
        from arspec.data.audio import wav_folder_splits
        folder = BUNDLED / "speech" if name == "speech" else Path(name.split(":", 1)[1])
        splits = wav_folder_splits(folder, spec)
        splits.name = name
        return splits
    if name.startswith("text:") or name == "python-stdlib":
        from arspec.data.text import text_splits
        if len(spec.event.shape) != 1:
            raise DataError(f"text data needs a sequence event [T], the spec's event is {list(spec.event.shape)}")
        path = Path(name.split(":", 1)[1]) if name.startswith("text:") else None
        return text_splits(path, spec.event.shape[0], getattr(spec.distribution, "classes", None))
    if name == "moving-mnist" or name.startswith("moving-mnist:"):
        from arspec.data.moving_mnist import moving_mnist
        return moving_mnist(name, spec)
    path = Path(name)
    if path.suffix == ".npz":
        return load_npz(path)
    if path.suffix == ".npy":
        return load_npy_items(path, tuple(spec.event.shape))
    if path.suffix == ".amat" or (path.is_dir() and (path / "binarized_mnist_train.amat").exists()):
        return load_amat(path)
    if path.is_dir():
        return load_npy_folder(path)
    raise DataError(f"unknown data {name!r}: use {', '.join(NAMES)}, text:FILE, cifar10:PATH, wav:FOLDER, a .npz or .npy file or a folder of .npy files")


def default_data(spec: Any) -> str:
    """The dataset a spec trains on when none is named."""
    if spec.training.data:
        return spec.training.data
    shape = tuple(spec.event.shape)
    dist = spec.distribution
    classes = getattr(dist, "classes", 2)
    if shape == (1, 28, 28):
        return "binarized-mnist" if dist.type == "bernoulli" else "mnist"
    if shape == (1, 8, 8):
        return "digits-binary" if dist.type == "bernoulli" else "digits"
    if len(shape) == 1 and dist.type == "categorical":
        return "speech"
    if len(shape) == 4 and shape[1] == 1 and shape[2] == shape[3] and dist.type in ("bernoulli", "categorical"):
        return "moving-mnist"
    if shape == (11,) and dist.type in REAL_VALUED:
        return "red-wine"
    raise DataError(f"no bundled dataset fits event {list(shape)} ({dist.type}, {classes} classes); pass --data "
                    f"(a .npz file, text:FILE, cifar10:PATH for 3x32x32 images, wav:FOLDER for audio)")


def load_data(spec: Any, name: str | None = None) -> Splits:
    """Load `name` (or the spec's default) and check that it fits the spec exactly: items, values,
    and the context arrays of every conditioning."""
    splits = load_named(name or default_data(spec), spec)
    check_fits(spec, splits)
    return splits


def invalid_values(dist: DistributionInfo, x: torch.Tensor) -> str | None:
    """Why `x` is not valid data for the distribution, or None."""
    if dist.discrete:
        if x.dtype.is_floating_point:
            return f"expected integer class indices, got {x.dtype}"
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or dist.classes is None or hi >= dist.classes:
            return f"values must lie in [0, {(dist.classes or 2) - 1}], got [{lo}, {hi}]"
    elif not x.dtype.is_floating_point:
        return f"expected real values, got {x.dtype}"
    return None


def check_fits(spec: Any, splits: Splits) -> None:
    """Shape and value range against the spec's event and distribution, and the context arrays
    against its conditioning, before training starts."""
    shape = tuple(spec.event.shape)
    dist = describe_distribution(spec.distribution, internal_event(shape)[0])
    for split in SPLITS:
        x = splits.split(split)
        if len(x) == 0:
            raise DataError(f"{splits.name}: the {split} split is empty")
        if tuple(x.shape[1:]) != shape:
            raise DataError(f"{splits.name}: items have shape {list(x.shape[1:])}, the spec's event is {list(shape)} "
                            f"(change event.shape or pick other data)")
        if dist.discrete and x.dtype.is_floating_point:
            if not torch.equal(x, x.round()):
                raise DataError(f"{splits.name}: {spec.distribution.type} needs integer values, got real numbers")
            x = x.long()
            setattr(splits, split, x)
        problem = invalid_values(dist, x)
        if problem:
            raise DataError(f"{splits.name} ({split}): {problem} for a {spec.distribution.type} distribution")
    if splits.vocab is not None and dist.classes is not None and len(splits.vocab) > dist.classes:
        raise DataError(f"{splits.name}: a vocabulary of {len(splits.vocab)} tokens needs at least that many classes, the spec has {dist.classes}")
    problems = splits.context_problems(spec)
    if problems:
        raise DataError(f"{splits.name}: " + "; ".join(problems))
