"""causal_attention — multi-head self-attention whose mask comes from the spec's ordering
(PixelSNAIL, Image Transformer, decoder-only language models); positions — positional features.

Queries come from the first input, keys and values from the others (concatenated; the first input
when there are none). Each is a 1x1 projection, then `attend`, then a 1x1 output projection. With
channel groups (R→G→B, the default for a multi-channel event) a token is one group at one position
and the projections are group-masked (type B); with `channel_groups: 1` a token is a whole position.

`causal` picks the rule relative to the ordering: `strict` (a token reads only tokens whose
elements all come strictly earlier: safe when keys see the raw input), `non_strict` (and itself:
for inputs already shifted), or `none` (every token: for paths that never read the data). A
`window` ([lo, hi] per axis, relative to the query), a `stride` or a `chunk` (over flat raster
positions, as in the Sparse Transformer) only removes keys."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field

from arspec.domains.pattern import AttentionPattern, token_ranks
from arspec.ops.base import LowerContext, NodeSpec, Op, ShapeError, output_channels
from arspec.ops.fields import LayerSpec, guard_layer
from arspec.ops.masks import GroupedMaskSpec, group_connectivity, groups_of
from arspec.ops.registry import register_op
from arspec.ordering import compute_raster
from arspec.primitives import Attend, Concat, MaskedConv, Positions
from arspec.primitives.program import ProgramBuilder, Value
from arspec.types import TensorType


class CausalAttentionSpec(GroupedMaskSpec, LayerSpec):
    op: Literal["causal_attention"]
    causal: Literal["strict", "non_strict", "none"] = Field(description=(
        "strict: only strictly earlier tokens (keys may read the raw input); non_strict: and the token itself "
        "(inputs already shifted); none: every token (only for paths that never read the data)."))
    heads: int = Field(1, ge=1, le=1024)
    key_channels: int = Field(16, ge=1, le=65536, description="Query/key channels per head (and per channel group).")
    value_channels: int | None = Field(None, ge=1, le=65536, description="Value channels per head; default key_channels.")
    window: list[list[int]] | None = Field(None, description="Per spatial axis [lo, hi]: keep keys whose position minus the query's lies in it.")
    stride: int | None = Field(None, ge=1, le=1_000_000, description="Keep keys whose flat (raster) position differs from the query's by a multiple of this (Sparse Transformer's strided head).")
    chunk: int | None = Field(None, ge=1, le=1_000_000, description="Keep keys in the query's chunk of this many flat positions (the fixed head).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the attention weights while training.")


class PositionsSpec(NodeSpec):
    op: Literal["positions"]
    kind: Literal["learned", "sinusoidal", "coordinates"] = "learned"
    channels: int | None = Field(None, ge=1, le=65536, description="Features per position (coordinates: one per axis).")


def attention_pattern(spec: CausalAttentionSpec, spatial: tuple[int, ...], ctx: LowerContext) -> AttentionPattern:
    """The allowed-key rule of one layer: token ranks from every mask set's ordering."""
    groups = groups_of(spec, ctx)
    if groups not in (1, ctx.groups):
        raise ShapeError(f"channel_groups must be 1 (a position is one token) or the event's {ctx.groups} channels, got {groups}",
                         "channel_groups")
    if spatial != ctx.spatial:
        raise ShapeError(f"attention runs at the event's resolution {list(ctx.spatial)}; this input is {list(spatial)}", "inputs")
    window = None
    if spec.window is not None:
        if len(spec.window) != len(spatial) or any(len(w) != 2 or w[0] > w[1] for w in spec.window):
            raise ShapeError(f"window needs one [lo, hi] (lo <= hi) per spatial axis ({len(spatial)}), got {spec.window}", "window")
        window = tuple((int(w[0]), int(w[1])) for w in spec.window)
    ranks = [token_ranks(ctx.order(m).reshape(ctx.groups, -1), groups) for m in range(max(ctx.masks, len(ctx.orders)))]
    queries, keys = [q for q, _ in ranks], [k for _, k in ranks]
    raster = compute_raster(ctx.event)
    return AttentionPattern(groups, spec.heads, spatial, np.stack(queries), np.stack(keys), spec.causal, window,
                            all(np.array_equal(o, raster) for o in ctx.orders), spec.stride, spec.chunk)


def _projection(channels: int, in_channels: int, groups: int, rank: int) -> MaskedConv:
    """A 1x1 map that keeps channel groups in order (type B: a group reads its own and earlier ones)."""
    guard_layer(channels, in_channels, 1)
    conn = group_connectivity(channels, in_channels, groups, "B")
    zero = (0,) * rank
    return MaskedConv(conn.reshape(conn.shape + (1,) * rank), (1,) * rank, zero, zero)


@register_op
class CausalAttention(Op):
    name = "causal_attention"
    Spec = CausalAttentionSpec
    max_inputs = None

    def infer(self, spec: CausalAttentionSpec, inputs: Sequence[TensorType], ctx: LowerContext) -> tuple[TensorType, dict[str, Any]]:
        spatial = inputs[0].spatial
        if not spatial:
            raise ShapeError("attention needs inputs with positions (a vector has no tokens)", "inputs")
        if any(t.spatial != spatial for t in inputs[1:]):
            raise ShapeError("queries, keys and values need the same positions", "inputs")
        pattern = attention_pattern(spec, spatial, ctx)
        return TensorType(output_channels(spec.channels, ctx), spatial), {"pattern": pattern}

    def semantics(self, spec: CausalAttentionSpec, attrs: dict[str, Any], b: ProgramBuilder, inputs: Sequence[Value], ctx: LowerContext) -> Value:
        pattern: AttentionPattern = attrs["pattern"]
        groups, heads, rank = pattern.groups, pattern.heads, len(pattern.spatial)
        source = inputs[0]
        if len(inputs) > 2:
            source = b.call("keys_in", Concat(), *inputs[1:])
        elif len(inputs) == 2:
            source = inputs[1]
        qk = groups * heads * spec.key_channels
        vc = groups * heads * (spec.value_channels or spec.key_channels)
        q = b.call("query", _projection(qk, inputs[0].type.channels, groups, rank), inputs[0])
        k = b.call("key", _projection(qk, source.type.channels, groups, rank), source)
        v = b.call("value", _projection(vc, source.type.channels, groups, rank), source)
        a = b.call("attend", Attend(pattern, spec.dropout), q, k, v)
        return b.call("out", _projection(output_channels(spec.channels, ctx), vc, groups, rank), a)


@register_op
class PositionsOp(Op):
    name = "positions"
    Spec = PositionsSpec

    def infer(self, spec: PositionsSpec, inputs: Sequence[TensorType], ctx: LowerContext) -> tuple[TensorType, dict[str, Any]]:
        spatial = inputs[0].spatial
        if not spatial:
            raise ShapeError("positions need an input with positions (its shape is all they read)", "inputs")
        rank = len(spatial)
        channels = spec.channels if spec.channels is not None else (rank if spec.kind == "coordinates" else None)
        if channels is None:
            raise ShapeError(f"{spec.kind} positions need `channels`", "channels")
        if spec.kind == "coordinates" and channels != rank:
            raise ShapeError(f"coordinates have one channel per axis ({rank}), got channels: {channels}", "channels")
        if spec.kind == "sinusoidal" and channels % (2 * rank):
            raise ShapeError(f"sinusoidal positions need channels divisible by 2 x {rank} axes, got {channels}", "channels")
        guard_layer(channels, int(np.prod(spatial)), 1)
        return TensorType(channels, spatial), {"channels": channels}

    def semantics(self, spec: PositionsSpec, attrs: dict[str, Any], b: ProgramBuilder, inputs: Sequence[Value], ctx: LowerContext) -> Value:
        return b.call("table", Positions(attrs["channels"], inputs[0].type.spatial, spec.kind))
