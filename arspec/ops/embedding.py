"""embedding — a learned vector per class of each data element (WaveNet's input layer).

Reads x as class indices. `shift: 1` delays the result one step along the last axis so that
position t sees only x[<t]; without it the first layer sees the element it predicts."""
from __future__ import annotations

from typing import Any, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from arspec.ops.base import LowerContext, NodeSpec, Op, ShapeError, TensorType, register_op
from arspec.ops.masks import channel_group
from arspec.ops.shift import shift_footprint, shift_tensor


class EmbeddingSpec(NodeSpec):
    op: Literal["embedding"]
    channels: int = Field(ge=1, le=1_000_000)
    shift: int = Field(0, ge=0, description="Delay along the last axis (1 makes a sequence model strictly causal).")


class Embedding(nn.Module):
    """Channel j embeds data channel j mod G."""

    def __init__(self, groups: int, classes: int, channels: int, shift: int) -> None:
        super().__init__()
        self.groups, self.classes, self.shift = groups, classes, shift
        self.weight = nn.Parameter(torch.randn(groups, classes, channels) * 0.5)
        sel = torch.as_tensor(channel_group(channels, groups)[None, :] == np.arange(groups)[:, None], dtype=torch.float32)
        self.register_buffer("select", sel, persistent=False)  # (G, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, G, *S) class indices -> (B, channels, *S)
        onehot = F.one_hot(x.long(), self.classes).to(self.weight.dtype)            # (B, G, *S, K)
        out = torch.einsum("bg...k,gkc,gc->bc...", onehot, self.weight, self.select)
        if self.shift:
            by = [0] * (out.dim() - 3) + [self.shift]
            out = shift_tensor(out, by)
        return out


@register_op
class EmbeddingOp(Op):
    name = "embedding"
    Spec = EmbeddingSpec
    reads_raw_data = True

    def infer(self, spec: EmbeddingSpec, inputs: Sequence[TensorType], ctx: LowerContext) -> tuple[TensorType, dict[str, Any]]:
        inp = inputs[0]
        classes = ctx.conditioning.get("__classes__")
        if classes is None:
            raise ShapeError("embedding needs a discrete distribution (categorical or discretized_logistic_mixture)", "op")
        if not inp.spatial:
            raise ShapeError("embedding needs the data x as its input", "inputs")
        return TensorType(spec.channels, inp.spatial), {"classes": classes}

    def footprint(self, spec, attrs, inputs, out, mask):
        inp = inputs[0]
        rank = len(out.spatial)
        conn = channel_group(spec.channels, inp.channels)[:, None] == np.arange(inp.channels)[None, :]
        deps = inp.conv(conn.reshape(conn.shape + (1,) * rank), (1,) * rank, (0,) * rank, out.spatial)
        if spec.shift:
            deps = shift_footprint(deps, out.channels, [0] * (rank - 1) + [spec.shift], out.spatial)
        return deps

    def build(self, spec, attrs, inputs, out, ctx):
        return Embedding(inputs[0].channels, attrs["classes"], spec.channels, spec.shift)

    def parameter_count(self, spec, attrs, inputs, out):
        return inputs[0].channels * attrs["classes"] * spec.channels
