"""shift — move a tensor along its spatial axes, filling with zeros.

`by: [1, 0]` moves an image down one row (the vertical-stack shift of Gated PixelCNN);
`by: [1]` delays a sequence by one step (the input shift that makes WaveNet strictly causal)."""
from __future__ import annotations

from typing import Any, Literal, Sequence

import numpy as np
import torch
from pydantic import Field
from torch import nn

from arspec.analysis.deps import Deps
from arspec.ops.base import LowerContext, NodeSpec, Op, ShapeError, TensorType, register_op


class ShiftSpec(NodeSpec):
    op: Literal["shift"]
    by: list[int] = Field(description="Steps to move along each spatial axis (positive: towards higher indices).")


def shift_tensor(x: torch.Tensor, by: Sequence[int]) -> torch.Tensor:
    """Shift the trailing spatial axes of x (B, C, *S) by `by`, zero-filled."""
    out = x
    for axis, step in enumerate(by):
        if step == 0:
            continue
        dim = 2 + axis
        size = x.shape[dim]
        zeros_shape = list(out.shape)
        zeros_shape[dim] = min(abs(step), size)
        zeros = out.new_zeros(zeros_shape)
        if step > 0:
            out = torch.cat([zeros, out.narrow(dim, 0, size - zeros_shape[dim])], dim=dim)
        else:
            out = torch.cat([out.narrow(dim, zeros_shape[dim], size - zeros_shape[dim]), zeros], dim=dim)
    return out


class Shift(nn.Module):
    def __init__(self, by: Sequence[int]) -> None:
        super().__init__()
        self.by = tuple(by)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return shift_tensor(x, self.by)


def shift_footprint(deps: Deps, channels: int, by: Sequence[int], spatial: Sequence[int]) -> Deps:
    """out[p] reads in[p - by]: a one-tap identity convolution."""
    conn = np.eye(channels, dtype=bool).reshape((channels, channels) + (1,) * len(by))
    return deps.conv(conn, (1,) * len(by), tuple(by), tuple(spatial))


@register_op
class ShiftOp(Op):
    name = "shift"
    Spec = ShiftSpec

    def infer(self, spec: ShiftSpec, inputs: Sequence[TensorType], ctx: LowerContext) -> tuple[TensorType, dict[str, Any]]:
        inp = inputs[0]
        if len(spec.by) != len(inp.spatial):
            raise ShapeError(f"'by' needs one value per spatial axis ({len(inp.spatial)}), got {spec.by}", "by")
        return TensorType(inp.channels, inp.spatial), {}

    def footprint(self, spec, attrs, inputs, out, mask):
        return shift_footprint(inputs[0], out.channels, spec.by, out.spatial)

    def build(self, spec, attrs, inputs, out, ctx):
        return Shift(spec.by)
