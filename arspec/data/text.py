"""Text as token sequences: crops of the event's length from a file or a folder of files, with a
byte-level vocabulary (a 256-class spec: every UTF-8 byte is a token) or a character-level one
(the sorted characters of the corpus). A folder, and the default corpus `python-stdlib` (the
Python standard library's own .py sources, present wherever Python is, no download), is split
by file: a file belongs to one split only, chosen by a stable hash of its relative path."""
from __future__ import annotations

import sysconfig
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from arspec.data.splits import SPLITS, DataError, Splits

TEXT_SUFFIXES = (".py", ".txt", ".md", ".rst")
CROPS = {"train": 50_000, "validation": 4_000, "test": 4_000}     # at most, per split


def python_stdlib_files() -> tuple[Path, list[Path]]:
    """The standard library folder and its .py files (site-packages left out), sorted."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(f for f in root.rglob("*.py") if "site-packages" not in f.relative_to(root).parts)
    if not files:
        raise DataError(f"no Python sources under {root}")
    return root, files


def split_of(relative: str) -> str:
    """The split of a file, from a stable hash of its path: about 80/10/10."""
    bucket = zlib.crc32(relative.encode("utf-8")) % 10
    return "test" if bucket == 0 else "validation" if bucket == 1 else "train"


def text_splits(path: Path | None, length: int, classes: int | None, seed: int = 0) -> Splits:
    """Splits of crops from `path` (a file, a folder, or None for python-stdlib)."""
    if path is None:
        root, files = python_stdlib_files()
        name = "python-stdlib"
    elif path.is_dir():
        root, files = path, sorted(f for f in path.rglob("*") if f.suffix in TEXT_SUFFIXES and f.is_file())
        name = f"text:{path}"
        if not files:
            raise DataError(f"{path}: no text files ({', '.join(TEXT_SUFFIXES)})")
    elif path.exists():
        return _single_file(path, length, classes, seed)
    else:
        raise DataError(f"no such file or folder: {path}")
    texts: dict[str, list[str]] = {split: [] for split in SPLITS}
    for f in files:
        texts[split_of(str(f.relative_to(root)))].append(f.read_text(encoding="utf-8", errors="replace"))
    joined = {split: "\n".join(parts) for split, parts in texts.items()}
    encode, vocab = _vocabulary(joined.values(), classes, name)
    rng = np.random.default_rng(seed)
    crops = [_crops(encode(joined[s]), length, CROPS[s], rng, f"{name} ({s})") for s in SPLITS]
    return Splits(*crops, name, {}, vocab)


def _single_file(path: Path, length: int, classes: int | None, seed: int) -> Splits:
    """One file: split 80/10/10 by position (no overlap between splits)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    encode, vocab = _vocabulary([text], classes, f"text:{path}")
    tokens = encode(text)
    bounds = [0, int(len(tokens) * 0.8), int(len(tokens) * 0.9), len(tokens)]
    rng = np.random.default_rng(seed)
    crops = [_crops(tokens[a:b], length, CROPS[s], rng, f"text:{path} ({s})")
             for (a, b), s in zip(zip(bounds, bounds[1:]), SPLITS)]
    return Splits(*crops, f"text:{path}", {}, vocab)


def _vocabulary(texts: Iterable[str], classes: int | None, name: str):
    """Byte tokens for a 256-class spec, else the sorted characters of the corpus's texts."""
    if classes == 256:
        return (lambda s: np.frombuffer(s.encode("utf-8"), dtype=np.uint8).astype(np.int64)), [chr(i) for i in range(256)]
    vocab = sorted(set().union(*(set(t) for t in texts)))
    if classes is not None and len(vocab) > classes:
        raise DataError(f"{name}: {len(vocab)} distinct characters need at least that many classes (or 256 for bytes), the spec has {classes}")
    index = {ch: i for i, ch in enumerate(vocab)}
    return (lambda s: np.fromiter((index[ch] for ch in s), dtype=np.int64, count=len(s))), vocab


def _crops(tokens: np.ndarray, length: int, most: int, rng: np.random.Generator, what: str) -> torch.Tensor:
    """Random crops of `length` tokens (about two per length of text, at most `most`)."""
    if len(tokens) < length:
        raise DataError(f"{what}: {len(tokens):,} tokens is too short for crops of {length}")
    count = min(most, max(1, 2 * len(tokens) // length))
    starts = rng.integers(0, len(tokens) - length + 1, size=count)
    return torch.as_tensor(np.stack([tokens[s:s + length] for s in starts]))
