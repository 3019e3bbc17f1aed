"""row_lstm / diagonal_lstm — the recurrent layers of PixelRNN (van den Oord et al. 2016a).

Row LSTM: an input-to-state convolution over the current row up to the current pixel (masked by
channel group, A or B), and a state-to-state convolution of width k over the previous row; one
batched LSTM step per row. Its context is a triangle above the pixel.

Diagonal LSTM: a 1x1 masked input-to-state convolution, then PixelRNN's 2x1 state-to-state
convolution over the previous column of the skewed map (each diagonal a column), unskewed: the
state at (i, j) reads the states at (i, j-1) and (i-1, j), the whole quadrant up and to the left. `direction: right` mirrors it (up and to the right, including the current row
— so its output must be shifted down one row before it joins the other direction, as in the
Diagonal BiLSTM)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field

from arspec.ops.base import LowerContext, NodeSpec, Op, ShapeError
from arspec.ops.masks import group_connectivity
from arspec.ops.registry import register_op
from arspec.primitives import DiagonalLstm, MaskedConv, RowLstm, SelectChannels
from arspec.primitives.program import ProgramBuilder, Value
from arspec.types import TensorType


class RowLstmSpec(NodeSpec):
    op: Literal["row_lstm"]
    hidden: int = Field(ge=1, le=100_000, description="State channels (a multiple of the data channels).")
    kernel: int = Field(3, ge=1, le=1025, description="Odd width of both convolutions.")
    mask: Literal["A", "B"] = "B"


class DiagonalLstmSpec(NodeSpec):
    op: Literal["diagonal_lstm"]
    hidden: int = Field(ge=1, le=100_000, description="State channels (a multiple of the data channels).")
    mask: Literal["A", "B"] = "B"
    direction: Literal["left", "right"] = Field("left", description="left: context up and to the left; right: mirrored.")


def _gate_layout(hidden: int, in_channels: int, groups: int, mask: str) -> np.ndarray:
    """(4*hidden, in) channel connectivity of the input-to-state map: each gate chunk [o, f, i, g]
    keeps channel j in group j mod G."""
    return np.concatenate([group_connectivity(hidden, in_channels, groups, mask)] * 4)  # type: ignore[arg-type]


class _LstmOp(Op):
    def _check(self, spec: Any, inp: TensorType, ctx: LowerContext) -> None:
        if len(inp.spatial) != 2:
            raise ShapeError(f"{self.name} needs an image input, got spatial shape {list(inp.spatial)}", "inputs")
        if spec.hidden % ctx.groups:
            raise ShapeError(f"hidden must be a multiple of the {ctx.groups} data channels, got {spec.hidden}", "hidden")
        if 4 * spec.hidden * (inp.channels + spec.hidden) * 3 > 200_000_000:
            raise ShapeError(f"layer too large: hidden {spec.hidden}", "hidden")

    def semantics(self, spec: Any, attrs: dict[str, Any], b: ProgramBuilder, inputs: Sequence[Value], ctx: LowerContext) -> Value:
        """The cell's value is its state [h, c]; the layer's output is h."""
        pre = b.call("input_to_state", attrs["input_to_state"], inputs[0])
        return b.call("h", attrs["h"], b.call("scan", attrs["scan"], pre))


@register_op
class RowLstmOp(_LstmOp):
    name = "row_lstm"
    Spec = RowLstmSpec

    def infer(self, spec: RowLstmSpec, inputs: Sequence[TensorType], ctx: LowerContext) -> tuple[TensorType, dict[str, Any]]:
        inp = inputs[0]
        self._check(spec, inp, ctx)
        if spec.kernel % 2 == 0:
            raise ShapeError(f"kernel must be odd, got {spec.kernel}", "kernel")
        half = spec.kernel // 2
        conn = np.ones((4 * spec.hidden, inp.channels, 1, half + 1), dtype=bool)
        conn[:, :, 0, half] = _gate_layout(spec.hidden, inp.channels, ctx.groups, spec.mask)
        return TensorType(spec.hidden, inp.spatial), {
            "input_to_state": MaskedConv(conn, (1, 1), (0, half), (0, 0), bias=False),
            "scan": RowLstm(spec.hidden, spec.kernel, ctx.groups),
            "h": SelectChannels(np.arange(spec.hidden))}


@register_op
class DiagonalLstmOp(_LstmOp):
    name = "diagonal_lstm"
    Spec = DiagonalLstmSpec

    def infer(self, spec: DiagonalLstmSpec, inputs: Sequence[TensorType], ctx: LowerContext) -> tuple[TensorType, dict[str, Any]]:
        inp = inputs[0]
        self._check(spec, inp, ctx)
        conn = _gate_layout(spec.hidden, inp.channels, ctx.groups, spec.mask)[:, :, None, None]
        return TensorType(spec.hidden, inp.spatial), {
            "input_to_state": MaskedConv(conn, (1, 1), (0, 0), (0, 0), bias=False),
            "scan": DiagonalLstm(spec.hidden, spec.direction == "right", ctx.groups),
            "h": SelectChannels(np.arange(spec.hidden))}

    def requires_shift(self, spec: DiagonalLstmSpec) -> tuple[int, ...] | None:
        return (1, 0) if spec.direction == "right" else None
