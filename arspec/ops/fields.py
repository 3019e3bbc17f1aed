"""The spec fields and limits shared by ops: one definition of channels, kernels, dilations,
activations and biases, and the size guards applied before anything is allocated."""
from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from arspec.ops.base import NodeSpec, ShapeError

MAX_CHANNELS = 1_000_000
MAX_LAYER_WEIGHTS = 200_000_000
MAX_KERNEL = 4096
MAX_DILATION = 4096

Activation = Literal["none", "relu", "elu", "tanh", "sigmoid", "gated"]
Channels = Annotated[int, Field(ge=1, le=MAX_CHANNELS)] | Literal["output"]
KernelSize = Annotated[int, Field(ge=1, le=MAX_KERNEL)]
Dilation = Annotated[int, Field(ge=1, le=MAX_DILATION)]


class LayerSpec(NodeSpec):
    """The fields of every learned layer: output channels, activation and bias."""

    channels: Channels = Field(description="Output channels, or 'output' for the distribution head.")
    activation: Activation = "none"
    bias: bool = True


def guard_layer(channels: int, in_channels: int, taps: int) -> None:
    """Reject an absurd layer before its connectivity array is allocated."""
    weights = channels * in_channels * taps
    if channels > MAX_CHANNELS or weights > MAX_LAYER_WEIGHTS:
        raise ShapeError(f"layer too large: {channels:,} channels, {weights:,} weights (limit {MAX_LAYER_WEIGHTS:,})", "channels")


def kernel_tuple(kernel: int | list[int], rank: int) -> tuple[int, ...]:
    """An int kernel means the same size on every spatial axis."""
    if isinstance(kernel, int):
        return (kernel,) * rank
    if len(kernel) != rank:
        raise ShapeError(f"kernel needs {rank} sizes, got {kernel}", "kernel")
    return tuple(kernel)


def odd_kernel(kernel: tuple[int, ...], op: str) -> tuple[int, ...]:
    if any(k % 2 == 0 for k in kernel):
        raise ShapeError(f"{op} needs odd kernel sizes, got {list(kernel)}", "kernel")
    return kernel


def taps_of(kernel: int | list[int], rank: int) -> int:
    return int(np.prod(kernel)) if isinstance(kernel, list) else int(kernel) ** rank
