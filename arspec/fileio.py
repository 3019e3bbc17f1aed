"""Writing files so that a crash, a full disk or a kill leaves the old file or the whole new one,
never a mix: a temporary file beside the target, fsync, rename, fsync of the folder."""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def fsync_dir(folder: Path) -> None:
    """Make a rename inside `folder` durable (where the platform can open folders)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; on success it is synced and renamed over
    `path`, on failure removed (`path` untouched either way until the rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def write_atomically(path: Path, data: bytes | str) -> None:
    """Replace `path` by `data` (text is written as UTF-8) atomically."""
    with replacing(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


def write_with(path: Path, writer: Callable[[Path], None]) -> None:
    """Replace `path` atomically by whatever `writer(temporary_path)` writes."""
    with replacing(path) as tmp:
        writer(tmp)
