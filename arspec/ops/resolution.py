"""space_to_depth / select_groups / depth_to_space — moving between resolutions (multiscale PixelCNN,
Reed et al. 2017).

`space_to_depth` folds each f×f block into channels: channel c*f² + g holds sub-position g of the
block (row-major: 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right for f = 2), so the
sub-positions become *channel groups* (group = channel mod f²) that group-masked convolutions
can order. Group 0 of a space-to-depth is the image subsampled by f: the next coarser scale.
`select_groups` keeps some of those groups; `depth_to_space` unfolds groups back into positions,
taking its groups from one or more inputs in turn (the coarse scale's prediction for group 0, this
scale's prediction for the rest). Footprints are exact in the per-position domain; these ops are
not translation-equivariant, so the offset domain declines them."""
from __future__ import annotations

from typing import Any, Literal, Sequence

import numpy as np
import torch
from pydantic import Field
from torch import nn

from arspec.analysis.deps import Deps
from arspec.ops.base import LowerContext, NodeSpec, Op, ShapeError, TensorType, register_op
from arspec.ops.convolution import MAX_CHANNELS

class SpaceToDepthSpec(NodeSpec):
    op: Literal["space_to_depth"]
    factor: int = Field(2, ge=2, le=64, description="Block size f: f×f positions become f² channel groups.")


class SelectGroupsSpec(NodeSpec):
    op: Literal["select_groups"]
    groups: int = Field(description="How many interleaved channel groups the input has (channel mod groups).", ge=1, le=4096)
    keep: list[int] = Field(description="The groups to keep, in the order they appear in the output.", min_length=1)


class DepthToSpaceSpec(NodeSpec):
    op: Literal["depth_to_space"]
    factor: int = Field(2, ge=2, le=64, description="Block size f: f² channel groups become f×f positions.")


def space_to_depth(x: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, C, *S) -> (B, C*f^d, *S/f); channel c*f^d + g is sub-position g of each block."""
    b, c, *spatial = x.shape
    nd = len(spatial)
    x = x.reshape([b, c] + [v for s in spatial for v in (s // factor, factor)])
    x = x.permute([0, 1] + [3 + 2 * i for i in range(nd)] + [2 + 2 * i for i in range(nd)])
    return x.reshape(b, c * factor ** nd, *[s // factor for s in spatial])


def depth_to_space(x: torch.Tensor, factor: int) -> torch.Tensor:
    """The inverse of `space_to_depth`."""
    b, cg, *spatial = x.shape
    nd = len(spatial)
    c = cg // factor ** nd
    x = x.reshape([b, c] + [factor] * nd + list(spatial))
    x = x.permute([0, 1] + [v for i in range(nd) for v in (2 + nd + i, 2 + i)])
    return x.reshape(b, c, *[s * factor for s in spatial])


class SpaceToDepth(nn.Module):
    def __init__(self, factor: int) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return space_to_depth(x, self.factor)


class SelectGroups(nn.Module):
    def __init__(self, index: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("index", torch.as_tensor(index, dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(1, self.index)


class DepthToSpace(nn.Module):
    """Interleaves the inputs' groups (input i holds `counts[i]` groups) and unfolds them."""

    def __init__(self, factor: int, counts: Sequence[int]) -> None:
        super().__init__()
        self.factor = factor
        self.counts = list(counts)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        if len(xs) > 1:
            b, _, *spatial = xs[0].shape
            c = xs[0].shape[1] // self.counts[0]
            xs = (torch.cat([x.reshape(b, c, n, *spatial) for x, n in zip(xs, self.counts)], dim=2).reshape(b, -1, *spatial),)
        return depth_to_space(xs[0], self.factor)


def select_index(channels: int, groups: int, keep: Sequence[int]) -> np.ndarray:
    """Input channel of each output channel: output ch*len(keep) + i reads input ch*groups + keep[i]."""
    per = channels // groups
    return (np.arange(per)[:, None] * groups + np.asarray(keep)[None, :]).reshape(-1)


def interleave_index(counts: Sequence[int], per_group: int) -> np.ndarray:
    """For inputs concatenated channel-wise (input i: per_group*counts[i] channels, layout
    ch*counts[i] + j), the concatenated channel that feeds merged channel ch*sum(counts) + g."""
    index = []
    starts = np.cumsum([0] + [per_group * n for n in counts])
    for ch in range(per_group):
        for i, n in enumerate(counts):
            for j in range(n):
                index.append(starts[i] + ch * n + j)
    return np.asarray(index)


@register_op
class SpaceToDepthOp(Op):
    moves_only = True
    name = "space_to_depth"
    Spec = SpaceToDepthSpec

    def infer(self, spec: SpaceToDepthSpec, inputs: Sequence[TensorType], ctx: LowerContext) -> tuple[TensorType, dict[str, Any]]:
        inp = inputs[0]
        if not inp.spatial:
            raise ShapeError("space_to_depth needs an input with spatial positions", "inputs")
        if any(s % spec.factor for s in inp.spatial):
            raise ShapeError(f"space_to_depth with factor {spec.factor} needs spatial sizes divisible by it, got {list(inp.spatial)}", "factor")
        subs = spec.factor ** len(inp.spatial)
        if inp.channels * subs > MAX_CHANNELS:
            raise ShapeError(f"space_to_depth would make {inp.channels * subs:,} channels (limit {MAX_CHANNELS:,})", "factor")
        return TensorType(inp.channels * subs, tuple(s // spec.factor for s in inp.spatial)), {}

    def footprint(self, spec, attrs, inputs, out, mask):
        """A stride-f convolution with f^d taps, each feeding its own output group."""
        nd = len(out.spatial)
        c = inputs[0].channels
        subs = spec.factor ** nd
        conn = np.zeros((c * subs, c) + (spec.factor,) * nd, dtype=bool)
        for ch in range(c):
            for g in range(subs):
                conn[(ch * subs + g, ch) + np.unravel_index(g, (spec.factor,) * nd)] = True
        return inputs[0].conv(conn, (1,) * nd, (0,) * nd, out.spatial, stride=(spec.factor,) * nd)

    def build(self, spec, attrs, inputs, out, ctx):
        return SpaceToDepth(spec.factor)


@register_op
class SelectGroupsOp(Op):
    moves_only = True
    name = "select_groups"
    Spec = SelectGroupsSpec

    def infer(self, spec: SelectGroupsSpec, inputs: Sequence[TensorType], ctx: LowerContext) -> tuple[TensorType, dict[str, Any]]:
        inp = inputs[0]
        if inp.channels % spec.groups:
            raise ShapeError(f"select_groups: {inp.channels} channels do not split into {spec.groups} groups", "groups")
        if len(set(spec.keep)) != len(spec.keep) or any(not 0 <= g < spec.groups for g in spec.keep):
            raise ShapeError(f"keep must list distinct groups in 0..{spec.groups - 1}, got {spec.keep}", "keep")
        index = select_index(inp.channels, spec.groups, spec.keep)
        return TensorType(len(index), inp.spatial), {"index": index}

    def footprint(self, spec, attrs, inputs, out, mask):
        return inputs[0].select(attrs["index"])

    def build(self, spec, attrs, inputs, out, ctx):
        return SelectGroups(attrs["index"])


@register_op
class DepthToSpaceOp(Op):
    moves_only = True
    name = "depth_to_space"
    Spec = DepthToSpaceSpec
    max_inputs = None

    def infer(self, spec: DepthToSpaceSpec, inputs: Sequence[TensorType], ctx: LowerContext) -> tuple[TensorType, dict[str, Any]]:
        first = inputs[0]
        if not first.spatial:
            raise ShapeError("depth_to_space needs inputs with spatial positions", "inputs")
        for t in inputs[1:]:
            if t.spatial != first.spatial:
                raise ShapeError(f"depth_to_space needs inputs of one spatial shape, got {list(first.spatial)} and {list(t.spatial)}", "inputs")
        subs = spec.factor ** len(first.spatial)
        total = sum(t.channels for t in inputs)
        if total % subs:
            raise ShapeError(f"depth_to_space with factor {spec.factor} needs channels divisible by {subs}, got {total}", "inputs")
        per_group = total // subs
        if any(t.channels % per_group for t in inputs):
            raise ShapeError(f"each input must hold whole groups of {per_group} channels, got {[t.channels for t in inputs]}", "inputs")
        counts = [t.channels // per_group for t in inputs]
        out = TensorType(per_group, tuple(s * spec.factor for s in first.spatial))
        return out, {"counts": counts, "index": interleave_index(counts, per_group)}

    def footprint(self, spec, attrs, inputs, out, mask):
        merged = inputs[0].concat(inputs[1:]).select(attrs["index"]) if len(inputs) > 1 else inputs[0]
        return merged.depth_to_space(spec.factor)

    def build(self, spec, attrs, inputs, out, ctx):
        return DepthToSpace(spec.factor, attrs["counts"])
