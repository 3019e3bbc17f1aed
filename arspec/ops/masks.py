"""Mask constructions from the papers: channel groups (R→G→B), raster masks A/B, MADE degrees."""
from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from arspec.ops.base import LowerContext, NodeSpec
from arspec.primitives import channel_group

MaskType = Literal["A", "B", "none"]


class GroupedMaskSpec(NodeSpec):
    """The field every channel-group-masked op shares."""

    channel_groups: int | None = Field(None, ge=1, le=4096, description=(
        "Channel groups ordered within a position; default: the event's channels (R -> G -> B). "
        "1 treats a pixel as one unit, as PixelCNN++'s coupled likelihood needs."))


def groups_of(spec: Any, ctx: LowerContext) -> int:
    """The channel groups a masked op orders: its own `channel_groups`, else the event's channels."""
    return getattr(spec, "channel_groups", None) or ctx.groups


# channel_group: channel j serves data channel j mod G. Interleaving keeps both halves of a gated
# unit in the same groups, and lays an output of P*G channels out parameter-major.
__all__ = ["GroupedMaskSpec", "channel_group", "group_connectivity", "groups_of", "hidden_degrees", "raster_kernel_mask"]


def group_connectivity(out_channels: int, in_channels: int, groups: int, mask: MaskType) -> np.ndarray:
    """(Co, Ci): may output channel co read input channel ci at the *same* position?

    Mask A: only earlier groups (the first layer must not see the element itself).
    Mask B: earlier groups and its own (later layers may reuse their own group's features)."""
    go = channel_group(out_channels, groups)[:, None]
    gi = channel_group(in_channels, groups)[None, :]
    if mask == "A":
        return gi < go
    if mask == "B":
        return gi <= go
    return np.ones((out_channels, in_channels), dtype=bool)


def raster_kernel_mask(kernel: tuple[int, ...], out_channels: int, in_channels: int, groups: int, mask: MaskType) -> np.ndarray:
    """(Co, Ci, *kernel) connectivity of a masked convolution in raster order.

    Taps strictly before the centre (in raster order) see every channel, the centre tap obeys the
    channel-group mask, taps after the centre see nothing."""
    conn = np.zeros((out_channels, in_channels) + kernel, dtype=bool)
    flat = conn.reshape(out_channels, in_channels, -1)
    centre = int(np.ravel_multi_index(tuple(k // 2 for k in kernel), kernel))
    flat[:, :, :centre] = True
    flat[:, :, centre] = group_connectivity(out_channels, in_channels, groups, mask)
    return conn


def hidden_degrees(rng: np.random.Generator, units: int, low: int, high: int, natural: bool) -> np.ndarray:
    """MADE hidden-unit degrees in [low, high]: spread evenly (natural) or drawn uniformly."""
    if high < low:
        return np.full(units, high)
    if natural:
        return low + (np.arange(units) % (high - low + 1))
    return rng.integers(low, high + 1, size=units)
