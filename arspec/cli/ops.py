"""`arspec ops`: every op specs can use, where it comes from, the primitives other packages add,
and plugins that failed to load."""
from __future__ import annotations

from typing import Any

from arspec.ops.registry import broken_ops, op_origin, ops
from arspec.primitives.registry import plugin_primitives
from arspec.primitives.step import DeclaredPrimitive


def run(args: Any) -> int:
    for name in sorted(ops()):
        origin = op_origin(name)
        print(f"{name}" + (f"  [{origin}]" if origin != "arspec" else ""))
    for name, reason in broken_ops().items():
        print(f"{name}: failed to load, skipped ({reason})")
    primitives, broken = plugin_primitives()
    for kind, (cls, package) in sorted(primitives.items()):
        declared = "declared by its step" if issubclass(cls, DeclaredPrimitive) else "with a kernel of its own"
        print(f"primitive {kind}  [{package}] ({declared})")
    for name, reason in broken.items():
        print(f"primitive {name}: failed to load, skipped ({reason})")
    return 0
