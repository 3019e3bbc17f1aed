"""CIFAR-10 from the standard python batch files, read without unpickling arbitrary objects.

The batch files are Python pickles. Unpickling can execute code, so this reader uses a restricted
unpickler that only builds dicts, lists, strings, bytes and numpy arrays (the classes the real
files contain) and refuses everything else."""
from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from arspec.data.splits import DataError

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("builtins", "bytearray"), ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise DataError(f"refusing to load {module}.{name} from a CIFAR batch file (not plain data)")


def read_batch(path: Path) -> np.ndarray:
    """One batch file -> (N, 3, 32, 32) uint8."""
    with open(path, "rb") as f:
        try:
            batch = _SafeUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
        except DataError:
            raise
        except Exception as err:
            raise DataError(f"{path}: not a CIFAR-10 batch file ({type(err).__name__}: {err})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{path}: not a CIFAR-10 batch file")
    data = batch.get(b"data", batch.get("data"))
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: expected a (N, 3072) uint8 'data' array")
    return data.reshape(-1, 3, 32, 32).astype(np.uint8)


def load_cifar10(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) from data_batch_1..5 and test_batch in `folder` (or its cifar-10-batches-py)."""
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    train_files = sorted(folder.glob("data_batch_*"))
    test_file = folder / "test_batch"
    if not train_files or not test_file.exists():
        raise DataError(f"{folder}: expected data_batch_1..5 and test_batch (the CIFAR-10 python version)")
    train = np.concatenate([read_batch(f) for f in train_files]).astype(np.int64)
    return train, read_batch(test_file).astype(np.int64)
