"""The ops of the spec language, one module each, plus plugins from the `arspec.ops` entry-point
group. `ops()` lists them; importing this package loads nothing."""
from arspec.ops.registry import broken_ops, get_op, ops, register_op

__all__ = ["broken_ops", "get_op", "ops", "register_op"]
