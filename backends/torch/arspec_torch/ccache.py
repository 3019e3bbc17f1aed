"""Compiled C libraries (the C step's runtime, the whole-tensor pass) kept in a private, verified
cache, and the private folder generated code is written to.

The cache is a file system object other users, other machines and crashes can touch, so nothing
in it is trusted: it lives in a folder private to this user ($ARSPEC_CACHE or ~/.cache/arspec,
created 0700; refused if another user owns it, made private if it is ours but open to others).
A library's name is keyed by its source, the flags, the compiler and the CPU's features (a
`-march=native` build for another CPU would die of SIGILL); it is written with fsync and an atomic
rename, its size and SHA-256 recorded beside it, and checked before every `dlopen` (a truncated
library would die of SIGBUS, an empty one fail forever): a mismatch means a rebuild.

Standalone (no arspec import): generated files carry a copy of it."""
from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import json
import os
import platform
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path


class CacheError(OSError):
    """The cache folder cannot be used safely (another user's, or not a folder)."""


def cache_root() -> Path:
    """$ARSPEC_CACHE, else ~/.cache/arspec."""
    return Path(os.environ.get("ARSPEC_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "arspec"))


def private_dir(path: Path) -> Path:
    """`path` as a folder only this user can read or write: created 0700 (with its parents); an
    existing one must be a real folder (not a link) owned by this user, and is made 0700."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise CacheError(f"{path}: not a folder (a link or a file); arspec keeps compiled code only in a private folder")
    if hasattr(os, "getuid"):
        if info.st_uid != os.getuid():
            raise CacheError(f"{path}: owned by another user; arspec keeps compiled code only in a folder of its own "
                             "(set ARSPEC_CACHE to another place)")
        if stat.S_IMODE(info.st_mode) & 0o077:
            os.chmod(path, 0o700)
    return path


def write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a reader sees the old file or the whole new one: a temporary
    file in the same folder (never following a planted name), fsync, rename, fsync of the folder."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):           # not every platform opens folders
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def compiler() -> str | None:
    """The C compiler to use: $CC, else cc or gcc on the PATH; None if there is none."""
    for name in (os.environ.get("CC"), "cc", "gcc"):
        if name and shutil.which(name):
            return name
    return None


@functools.cache
def compiler_identity(name: str) -> str:
    """The compiler's resolved path and version line (a new compiler builds anew)."""
    path = shutil.which(name) or name
    try:
        version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60).stdout.splitlines()[:1]
    except (OSError, subprocess.SubprocessError):
        version = []
    return f"{os.path.realpath(path)} {' '.join(version)}"


@functools.cache
def cpu_identity() -> str:
    """What `-march=native` compiles for: the CPU's model and feature flags (Linux), else the
    machine and processor names."""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as info:
            fields: dict[str, str] = {}
            for line in info:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "flags", "Features", "CPU part") and key not in fields:
                    fields[key] = " ".join(value.split())
                if not line.strip() and fields:
                    break
            if fields:
                return json.dumps(fields, sort_keys=True)
    return f"{platform.machine()} {platform.processor()}"


def library_key(source: str, flags: tuple[str, ...]) -> str:
    """The cache key of a library: its source, flags, compiler and CPU."""
    text = "\n".join([source, " ".join(flags), compiler_identity(compiler() or "cc"), cpu_identity()])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _record(library: Path) -> Path:
    return library.with_suffix(".json")


def verified(library: Path) -> bool:
    """Whether `library` is exactly the file recorded beside it (size and SHA-256)."""
    try:
        record = json.loads(_record(library).read_text())
        data = library.read_bytes()
    except (OSError, ValueError):
        return False
    return (isinstance(record, dict) and record.get("size") == len(data)
            and record.get("sha256") == hashlib.sha256(data).hexdigest())


@contextlib.contextmanager
def _build_lock(folder: Path):
    """One build at a time per cache folder (other processes wait, then find the library built)."""
    try:
        import fcntl
    except ImportError:                                   # no advisory locks here: builds may race, both atomic
        yield
        return
    with open(folder / ".build.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def build_library(source: str, flags: tuple[str, ...], library: Path) -> None:
    """Compile `source` into `library` (atomically), with its size and hash recorded beside it."""
    with tempfile.TemporaryDirectory(dir=library.parent) as work:
        c_file, built = Path(work) / "library.c", Path(work) / "library.so"
        c_file.write_text(source)
        result = subprocess.run([compiler() or "cc", *flags, "-o", str(built), str(c_file), "-lm"],
                                capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f"compiling C kernels failed:\n{result.stderr[-2000:]}")
        data = built.read_bytes()
    write_atomically(library, data)
    record = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "flags": list(flags)}
    write_atomically(_record(library), json.dumps(record).encode())


@functools.lru_cache(maxsize=8)
def load_library(source: str, flags: tuple[str, ...], prefix: str = "runtime") -> ctypes.CDLL:
    """The compiled library of a C source: built once per machine, compiler and CPU, then reused
    after its size and hash are checked (a damaged or foreign file is rebuilt, never loaded)."""
    folder = private_dir(cache_root() / "cstep")
    library = folder / f"{prefix}_{library_key(source, flags)}.so"
    if not verified(library):
        with _build_lock(folder):
            if not verified(library):
                build_library(source, flags, library)
    return ctypes.CDLL(str(library))
