"""space_to_depth / select_groups / depth_to_space — moving between resolutions (multiscale PixelCNN,
Reed et al. 2017).

`space_to_depth` folds each f×f block into channels: channel c*f² + g holds sub-position g of the
block (row-major: 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right for f = 2), so the
sub-positions become *channel groups* (group = channel mod f²) that group-masked convolutions
can order. Group 0 of a space-to-depth is the image subsampled by f: the next coarser scale.
`select_groups` keeps some of those groups; `depth_to_space` unfolds groups back into positions,
taking its groups from one or more inputs in turn (the coarse scale's prediction for group 0, this
scale's prediction for the rest)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field

from arspec.ops.base import LowerContext, NodeSpec, Op, ShapeError
from arspec.ops.fields import MAX_CHANNELS
from arspec.ops.registry import register_op
from arspec.primitives import DepthToSpace, SelectChannels, SpaceToDepth
from arspec.primitives.program import ProgramBuilder, Value
from arspec.types import TensorType


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


def select_index(channels: int, groups: int, keep: Sequence[int]) -> np.ndarray:
    """Input channel of each output channel: output ch*len(keep) + i reads input ch*groups + keep[i]."""
    per = channels // groups
    return (np.arange(per)[:, None] * groups + np.asarray(keep)[None, :]).reshape(-1)


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

    def semantics(self, spec: SpaceToDepthSpec, attrs: dict[str, Any], b: ProgramBuilder, inputs: Sequence[Value], ctx: LowerContext) -> Value:
        return b.call("fold", SpaceToDepth(spec.factor), inputs[0])


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

    def semantics(self, spec: SelectGroupsSpec, attrs: dict[str, Any], b: ProgramBuilder, inputs: Sequence[Value], ctx: LowerContext) -> Value:
        return b.call("select", SelectChannels(attrs["index"]), inputs[0])


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
        counts = tuple(t.channels // per_group for t in inputs)
        return TensorType(per_group, tuple(s * spec.factor for s in first.spatial)), {"counts": counts}

    def semantics(self, spec: DepthToSpaceSpec, attrs: dict[str, Any], b: ProgramBuilder, inputs: Sequence[Value], ctx: LowerContext) -> Value:
        return b.call("unfold", DepthToSpace(spec.factor, attrs["counts"]), *inputs)
