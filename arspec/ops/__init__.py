"""Every op the spec language knows, each in its own module. Importing this package registers them."""
from arspec.ops import (  # noqa: F401  (imported for registration)
    conv,
    conv1x1,
    elementwise,
    embedding,
    group_masked_conv2d,
    masked_conv2d,
    masked_linear,
    nade,
    recurrent,
    resolution,
    shift,
    stacks,
)
from arspec.ops.base import OPS, Op, register_op

__all__ = ["OPS", "Op", "register_op"]
