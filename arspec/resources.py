"""What this machine can hold: guards that refuse a request before allocating what cannot fit."""
from __future__ import annotations

import os


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation now (Linux: MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def gigabytes(n: int) -> str:
    return f"{n / 2 ** 30:,.1f} GiB"


DEFAULT_BUDGET = 4 * 2 ** 30
_budget: list[int | None] = [None]


def parse_bytes(text: str) -> int:
    """'4GB', '512MiB', '2e9', '800 MB' -> bytes (a ValueError naming the text otherwise)."""
    import re
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([kKmMgGtT]?)(i?)[bB]?\s*", text)
    if not match:
        raise ValueError(f"expected a size such as 4GB or 512MiB, got {text!r}")
    value, unit, binary = float(match.group(1)), match.group(2).upper(), match.group(3)
    power = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4}[unit]
    result = int(value * (1024 if binary else 1000) ** power)
    if result < 1:
        raise ValueError(f"expected a positive size, got {text!r}")
    return result


def set_memory_budget(limit: int | None) -> None:
    """The bytes one batched call may use (None: the default) — what `--max-memory` sets."""
    _budget[0] = limit


def memory_budget() -> int:
    """The budget of one batched evaluation call: set by `--max-memory` or ARSPEC_MAX_MEMORY, else
    4 GiB or a quarter of the available memory, whichever is smaller."""
    if _budget[0] is not None:
        return _budget[0]
    if os.environ.get("ARSPEC_MAX_MEMORY"):
        return parse_bytes(os.environ["ARSPEC_MAX_MEMORY"])
    free = available_memory()
    return min(DEFAULT_BUDGET, free // 4) if free else DEFAULT_BUDGET
