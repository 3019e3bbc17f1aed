"""Keeping freed memory for reuse: glibc's allocator, left to itself, serves every tensor of a few
megabytes with fresh pages from the kernel (mmap) and returns them on free, so each whole-sequence
operation pays a page fault per 4 KiB before it computes anything. Measured on Parallel WaveNet's
student (one second of audio, 2 cores): 53 ms with freed memory kept, 160-190 ms without. This
keeps allocations under 32 MiB on the heap and lets up to 1 GiB of freed memory stay there
(what jemalloc and tcmalloc, which PyTorch recommends on the CPU, do by design). A process-wide
choice: the `arspec` command and the benchmarks make it; a library user calls `tune_allocator()`."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
#: the largest value glibc accepts for M_MMAP_THRESHOLD on 64-bit systems
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 1024 * 1024 * 1024

_tuned: bool | None = None


def tune_allocator() -> bool:
    """Keep freed memory for reuse (glibc on Linux; elsewhere nothing is changed). Returns whether
    the setting is in effect. ARSPEC_ALLOCATOR=default leaves the allocator as it is."""
    global _tuned
    if _tuned is not None:
        return _tuned
    _tuned = False
    if os.environ.get("ARSPEC_ALLOCATOR", "").lower() == "default" or not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):           # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _tuned = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _tuned


def allocator_tuned() -> bool:
    """Whether this process keeps freed memory for reuse (`tune_allocator` took effect)."""
    return bool(_tuned)
