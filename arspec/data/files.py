"""Data a user brings: a .npz file or a folder of .npy files (items, context arrays named after the
conditioning, optionally a vocabulary), a text file (characters as tokens), or the standard
binarized MNIST .amat files."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from arspec.data.splits import SPLITS, DataError, Splits

# array names accepted for each split's items, and the prefixes of its context arrays
ITEM_NAMES = {"train": ("train", "x_train"), "validation": ("validation", "valid", "x_valid"), "test": ("test", "x_test")}
CONTEXT_PREFIXES = {"train": ("train_",), "validation": ("validation_", "valid_"), "test": ("test_",)}


def split_indices(n: int, seed: int = 0, fractions: tuple[float, float] = (0.8, 0.1)) -> list[np.ndarray]:
    """A fixed shuffled 80/10/10 split of n items (the same for arrays of the same length)."""
    perm = np.random.default_rng(seed).permutation(n)
    a, b = int(n * fractions[0]), int(n * fractions[0]) + int(n * fractions[1])
    return [perm[:a], perm[a:b], perm[b:]]


def plain_numbers(key: str, array: np.ndarray, name: str) -> np.ndarray:
    """`array` as numbers torch can hold (booleans, integers up to int64, floats; float16 widened),
    one row per item; a DataError naming the array otherwise, or if it holds NaN or infinities."""
    if array.ndim == 0:
        raise DataError(f"{name}: array {key!r} is a single value; expected one row per item")
    kind = array.dtype.kind
    if kind not in "biuf":
        raise DataError(f"{name}: array {key!r} holds {array.dtype} values; expected numbers (booleans, integers or reals)")
    if kind == "u" and array.dtype.itemsize == 8:
        if array.size and int(array.max()) > np.iinfo(np.int64).max:
            raise DataError(f"{name}: array {key!r} holds integers above {np.iinfo(np.int64).max:,}")
        array = array.astype(np.int64)
    if kind == "f":
        if array.dtype.itemsize < 4:
            array = array.astype(np.float32)
        bad = ~np.isfinite(array)
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise DataError(f"{name}: array {key!r} holds {int(bad.sum()):,} NaN or infinite value(s) (the first in row {row})")
    return array


def _vocabulary(array: np.ndarray, name: str) -> list[str]:
    if array.ndim != 1 or array.dtype.kind not in "US":
        raise DataError(f"{name}: array 'vocab' must be a list of token strings, got {array.dtype} of shape {list(array.shape)}")
    return [str(t) for t in array]


def from_arrays(arrays: dict[str, np.ndarray], name: str) -> Splits:
    """Splits from named arrays: train/validation/test (or x_train/x_valid/x_test) with context
    arrays `<split>_<conditioning>`; or one array `x` (split 80/10/10) with context arrays named
    after the conditioning; and an optional `vocab` of token strings. Every array but the
    vocabulary must hold plain numbers (see plain_numbers)."""
    vocab = _vocabulary(arrays["vocab"], name) if "vocab" in arrays else None
    arrays = {k: (v if k == "vocab" else plain_numbers(k, v, name)) for k, v in arrays.items()}
    found = {split: next((arrays[k] for k in names if k in arrays), None) for split, names in ITEM_NAMES.items()}
    if all(v is not None for v in found.values()):
        items = [torch.as_tensor(found[s]) for s in SPLITS]
        contexts = {s: {k[len(p):]: torch.as_tensor(v) for k, v in arrays.items() for p in CONTEXT_PREFIXES[s]
                        if k.startswith(p) and k not in ITEM_NAMES[s]} for s in SPLITS}
        return Splits(*items, name, contexts, vocab)
    if "x" in arrays:
        x = arrays["x"]
        parts = split_indices(len(x))
        side = {k: v for k, v in arrays.items() if k not in ("x", "vocab") and len(v) == len(x)}
        contexts = {s: {k: torch.as_tensor(v[idx]) for k, v in side.items()} for s, idx in zip(SPLITS, parts)}
        return Splits(*[torch.as_tensor(x[idx]) for idx in parts], name, contexts, vocab)
    raise DataError(f"{name}: expected arrays train/validation/test (or x_train/x_valid/x_test, or x) "
                    f"with context arrays such as train_label; found {', '.join(sorted(arrays)) or 'nothing'}")


def read_npz(path: Path, name: str | None = None) -> dict[str, np.ndarray]:
    """The named arrays of a .npz archive, read without pickle (a DataError naming `name`, the
    file by default, for anything else: a single .npy, a damaged archive, an object array)."""
    name = name or str(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            if not hasattr(f, "files"):
                raise DataError(f"{name}: a single .npy array; expected a .npz archive of named arrays")
            return {k: f[k] for k in f.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"{name}: not a readable .npz of plain arrays ({type(err).__name__}: {err})") from None


def load_npz(path: Path) -> Splits:
    if not path.exists():
        raise DataError(f"no such file: {path}")
    return from_arrays(read_npz(path), str(path))


def load_npy_items(path: Path, event: tuple[int, ...]) -> Splits:
    """One .npy array of items (N, *event), split 80/10/10 with a fixed permutation; grey videos
    may leave out their channel axis (N, T, H, W)."""
    if not path.exists():
        raise DataError(f"no such file: {path}")
    try:
        x = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise DataError(f"{path}: not a plain .npy array ({type(err).__name__}: {err})") from None
    if not isinstance(x, np.ndarray):
        raise DataError(f"{path}: a .npz archive under a .npy name; expected one array of items")
    if len(event) == 4 and event[1] == 1 and x.shape[1:] == (event[0], *event[2:]):
        x = x[:, :, None]
    return from_arrays({"x": x}, str(path))


def load_npy_folder(folder: Path) -> Splits:
    """A folder of .npy files named like the arrays of a .npz (train.npy, train_genre.npy, ...) and
    optionally vocab.txt (one token per line)."""
    arrays = {}
    for f in sorted(folder.glob("*.npy")):
        try:
            arrays[f.stem] = np.load(f, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise DataError(f"{f}: not a plain .npy array ({err})") from None
    vocab_file = folder / "vocab.txt"
    if vocab_file.exists():
        arrays["vocab"] = np.array(vocab_file.read_text(encoding="utf-8").split("\n")[:-1])
    return from_arrays(arrays, str(folder))


def load_amat(path: Path) -> Splits:
    """The standard binarized MNIST files (Larochelle): binarized_mnist_{train,valid,test}.amat."""
    folder = path if path.is_dir() else path.parent
    parts = []
    for split in ("train", "valid", "test"):
        f = folder / f"binarized_mnist_{split}.amat"
        if not f.exists():
            raise DataError(f"missing {f} (expected binarized_mnist_train/valid/test.amat)")
        parts.append(torch.as_tensor(np.loadtxt(f, dtype=np.int64).reshape(-1, 1, 28, 28)))
    return Splits(*parts, str(folder))
