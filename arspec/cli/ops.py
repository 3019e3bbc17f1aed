"""`arspec ops`: every op specs can use, where it comes from, and plugins that failed to load."""
from __future__ import annotations

from typing import Any

from arspec.ops.registry import broken_ops, op_origin, ops


def run(args: Any) -> int:
    for name in sorted(ops()):
        origin = op_origin(name)
        print(f"{name}" + (f"  [{origin}]" if origin != "arspec" else ""))
    for name, reason in broken_ops().items():
        print(f"{name}: failed to load, skipped ({reason})")
    return 0
