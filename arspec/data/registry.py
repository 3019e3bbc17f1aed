"""Resolve `--data NAME_OR_PATH` to train/validation/test tensors that fit a spec, or a clear error.

Bundled (see bundled/README.md for sources and licences): binarized-mnist (the standard fixed
binarization of Larochelle & Murray, 50,000 / 10,000 / 10,000; the default for 1x28x28 binary
specs), binarized-mnist-5k (5,000 real MNIST digits with labels, binarized once with a fixed seed:
quick runs and class conditioning), mnist (the same 5,000 digits as 8-bit values), digits and
digits-binary (the UCI 8x8 digits, 17 levels / thresholded), speech (two CMU ARCTIC utterances).
Yours: cifar10:PATH, wav:FOLDER, or a path to .npz / .amat files."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from arspec.distributions import DistributionInfo, describe_distribution


class DataError(ValueError):
    """Data that cannot be used with this spec (missing, wrong shape or range)."""


@dataclass
class Splits:
    """Data items per split, and optional class labels (fed to a global conditioning named `label`)."""

    train: torch.Tensor
    validation: torch.Tensor
    test: torch.Tensor
    name: str
    labels: dict[str, torch.Tensor] | None = None

    def split(self, name: str) -> torch.Tensor:
        return {"train": self.train, "validation": self.validation, "test": self.test}[name]

    def context(self, spec, split: str) -> dict[str, torch.Tensor]:
        """Context tensors for the spec's conditioning, per item of `split`."""
        out = {}
        for name, cond in spec.conditioning.items():
            if name == "label" and cond.type == "global" and self.labels is not None:
                labels = self.labels[split]
                if int(labels.max()) >= cond.classes:
                    raise DataError(f"{self.name}: labels go up to {int(labels.max())}, conditioning 'label' has {cond.classes} classes")
                out[name] = labels
            else:
                raise DataError(f"{self.name} provides no context for conditioning {name!r} "
                                f"(only class labels, as a global conditioning named 'label')")
        return out


def _split(x: np.ndarray, seed: int = 0, fractions: tuple[float, float] = (0.8, 0.1)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A fixed shuffled 80/10/10 split (the same permutation for arrays of the same length)."""
    perm = np.random.default_rng(seed).permutation(len(x))
    n_train = int(len(x) * fractions[0])
    n_val = int(len(x) * fractions[1])
    return x[perm[:n_train]], x[perm[n_train:n_train + n_val]], x[perm[n_train + n_val:]]


def _labelled(x: np.ndarray, y: np.ndarray, name: str) -> Splits:
    splits = _from_arrays(*_split(x), name)
    tr, va, te = _split(y)
    splits.labels = {"train": torch.as_tensor(tr), "validation": torch.as_tensor(va), "test": torch.as_tensor(te)}
    return splits


BUNDLED = Path(__file__).resolve().parent / "bundled"


def _bundled(name: str) -> dict[str, np.ndarray]:
    with np.load(BUNDLED / name, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def mnist_subset() -> tuple[np.ndarray, np.ndarray]:
    """5,000 real MNIST digits, (5000, 1, 28, 28) uint8, and their labels."""
    data = _bundled("mnist_5k.npz")
    return data["x"].reshape(-1, 1, 28, 28), data["y"]


def binarized_mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The standard binarized MNIST: train, valid, test as (N, 1, 28, 28) int64 in {0, 1}."""
    data = _bundled("binarized_mnist.npz")
    return tuple(np.unpackbits(data[k], axis=1)[:, :784].reshape(-1, 1, 28, 28).astype(np.int64)  # type: ignore[return-value]
                 for k in ("train", "valid", "test"))


def binarize(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """Stochastic binarization (Salakhutdinov & Murray 2008), once, with a fixed seed."""
    return (np.random.default_rng(seed).random(x.shape) < x / 255.0).astype(np.int64)


def _from_arrays(train, val, test, name) -> Splits:
    return Splits(torch.as_tensor(train), torch.as_tensor(val), torch.as_tensor(test), name)


def _load_named(name: str) -> Splits:
    if name == "binarized-mnist":
        return _from_arrays(*binarized_mnist(), name)
    if name in ("binarized-mnist-5k", "mnist"):
        x, y = mnist_subset()
        return _labelled(binarize(x) if name == "binarized-mnist-5k" else x.astype(np.int64), y, name)
    if name in ("digits", "digits-binary"):
        digits = _bundled("digits.npz")
        x = digits["x"].reshape(-1, 1, 8, 8).astype(np.int64)
        if name == "digits-binary":
            x = (x >= 8).astype(np.int64)
        return _labelled(x, digits["y"], name)
    if name.startswith("cifar10:"):
        from arspec.data.cifar import load_cifar10
        train, test = load_cifar10(Path(name.split(":", 1)[1]))
        n_val = max(1, len(train) // 10)
        return _from_arrays(train[n_val:], train[:n_val], test, name)
    if name == "speech" or name.startswith("wav:"):
        raise DataError("audio is cut to the spec's event length; use load_data")
    path = Path(name)
    if path.suffix == ".npz":
        return _load_npz(path)
    if path.suffix == ".amat" or path.is_dir():
        return _load_amat(path)
    raise DataError(f"unknown data {name!r}: use {', '.join(NAMES)}, cifar10:PATH, wav:FOLDER, or a .npz/.amat path")


NAMES = ("binarized-mnist", "binarized-mnist-5k", "mnist", "digits", "digits-binary", "speech")


def _load_npz(path: Path) -> Splits:
    if not path.exists():
        raise DataError(f"no such file: {path}")
    with np.load(path, allow_pickle=False) as f:
        keys = set(f.files)
        if {"train", "validation", "test"} <= keys:
            return _from_arrays(f["train"], f["validation"], f["test"], str(path))
        if {"x_train", "x_valid", "x_test"} <= keys:
            return _from_arrays(f["x_train"], f["x_valid"], f["x_test"], str(path))
        if "x" in keys:
            return _from_arrays(*_split(f["x"]), str(path))
    raise DataError(f"{path}: expected arrays train/validation/test, x_train/x_valid/x_test, or x")


def _load_amat(path: Path) -> Splits:
    """The standard binarized MNIST files (Larochelle): binarized_mnist_{train,valid,test}.amat."""
    folder = path if path.is_dir() else path.parent
    parts = []
    for split in ("train", "valid", "test"):
        f = folder / f"binarized_mnist_{split}.amat"
        if not f.exists():
            raise DataError(f"missing {f} (expected binarized_mnist_train/valid/test.amat)")
        parts.append(np.loadtxt(f, dtype=np.int64).reshape(-1, 1, 28, 28))
    return _from_arrays(*parts, str(folder))


def default_data(spec) -> str:
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
    raise DataError(f"no bundled dataset fits event {list(shape)} ({dist.type}, {classes} classes); pass --data "
                    f"(cifar10:PATH for 3x32x32 images, wav:FOLDER for audio, or a .npz file)")


def load_data(spec, name: str | None = None) -> Splits:
    """Load `name` (or the spec's default) and check that it fits the spec exactly."""
    name = name or default_data(spec)
    if name == "speech" or name.startswith("wav:"):
        from arspec.data.audio import wav_folder_splits
        folder = BUNDLED / "speech" if name == "speech" else Path(name.split(":", 1)[1])
        splits = wav_folder_splits(folder, spec)
        splits.name = name
    else:
        splits = _load_named(name)
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


def check_fits(spec, splits: Splits) -> None:
    """Shape and value range against the spec's event and distribution, before training starts."""
    shape = tuple(spec.event.shape)
    dist = describe_distribution(spec.distribution, shape[0] if len(shape) > 1 else 1)
    for split in ("train", "validation", "test"):
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
