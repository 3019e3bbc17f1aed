"""One training run per output folder: an advisory lock on `OUT/.arspec.lock`, held for the whole
run and released by the operating system when the process ends, however it ends."""
from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import IO

from arspec.errors import UsageError


class FolderInUse(UsageError):
    """Another process is training into the same folder."""


class RunLock:
    """`with RunLock(out):` holds `out` for this process, or raises FolderInUse naming the holder."""

    def __init__(self, out: Path) -> None:
        self.path = Path(out) / ".arspec.lock"
        self.file: IO[str] | None = None

    def __enter__(self) -> RunLock:
        try:
            import fcntl
        except ImportError:                 # no advisory locks on this platform: nothing to hold
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip()
            f.close()
            who = f" (process {holder})" if holder.isdigit() else ""
            raise FolderInUse(f"{self.path.parent} is in use by another training run{who}; wait for it to end, "
                              "or choose another --out") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self.file = f
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if self.file is not None:
            self.file.close()               # closing releases the lock
            self.file = None
