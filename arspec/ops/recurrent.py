"""row_lstm / diagonal_lstm — the recurrent layers of PixelRNN (van den Oord et al. 2016a).

Row LSTM: an input-to-state convolution over the current row up to the current pixel (masked by
channel group, A or B), and a state-to-state convolution of width k over the previous row; one
batched LSTM step per row. Its context is a triangle above the pixel.

Diagonal LSTM: the map is skewed (row i moved i to the right) so that each diagonal becomes a
column; a 1x1 masked input-to-state convolution and a 2x1 state-to-state convolution over the
previous column give one batched step per diagonal. In image coordinates the state at (i, j)
reads the states at (i, j-1) and (i-1, j): the whole quadrant up and to the left. `direction:
right` mirrors it (up and to the right, including the current row — so its output must be shifted
down one row before it joins the other direction, as in the Diagonal BiLSTM)."""
from __future__ import annotations

from typing import Any, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from arspec.analysis.deps import Deps
from arspec.ops.base import LowerContext, NodeSpec, Op, ShapeError, TensorType, register_op
from arspec.ops.masks import group_connectivity
from arspec.runtime.layers import MaskedConv


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


def _lstm_update(gates: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    o, f, i, g = gates.chunk(4, dim=1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def _probe_lstm(input_to_state: MaskedConv, state_to_state: nn.Conv1d, hidden: int, gen: torch.Generator) -> None:
    """Parameters for the dynamic check: input and output gates open, forget gate half open and a
    state-to-state map of gain about one, so a perturbation still shows after a whole image of
    recurrent steps (with small random weights it would fall below float64 resolution)."""
    with torch.no_grad():
        bias = input_to_state.bias
        bias.zero_()
        bias[:hidden] = 4.0                 # o
        bias[2 * hidden:3 * hidden] = 4.0   # i
        w = state_to_state.weight
        w.copy_(torch.randn(w.shape, generator=gen, dtype=w.dtype) * (2.0 / (w.shape[1] * w.shape[2])) ** 0.5)
        state_to_state.bias.zero_()


def _gate_layout(hidden: int, in_channels: int, groups: int, mask: str) -> np.ndarray:
    """(4*hidden, in) channel connectivity of the input-to-state map: each gate chunk [o, f, i, g]
    keeps channel j in group j mod G."""
    return np.concatenate([group_connectivity(hidden, in_channels, groups, mask)] * 4)


class RowLstm(nn.Module):
    def __init__(self, conn: np.ndarray, hidden: int, kernel: int) -> None:
        super().__init__()
        half = kernel // 2
        self.input_to_state = MaskedConv(conn, (1, 1), (0, half), (0, 0))
        self.state_to_state = nn.Conv1d(hidden, 4 * hidden, kernel, padding=half)
        self.hidden = hidden

    def probe_parameters(self, gen: torch.Generator) -> None:
        _probe_lstm(self.input_to_state, self.state_to_state, self.hidden, gen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.input_to_state(x)                              # (B, 4h, H, W)
        b, _, height, width = pre.shape
        h = pre.new_zeros(b, self.hidden, width)
        c = torch.zeros_like(h)
        rows = []
        for i in range(height):
            gates = pre[:, :, i] + (self.state_to_state(h) if i else 0)
            h, c = _lstm_update(gates, c)
            rows.append(h)
        return torch.stack(rows, dim=2)


def skew(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H, W + H - 1): row i moved i columns to the right."""
    b, ch, height, width = x.shape
    out = x.new_zeros(b, ch, height, width + height - 1)
    for i in range(height):
        out[:, :, i, i:i + width] = x[:, :, i]
    return out


def unskew(x: torch.Tensor, width: int) -> torch.Tensor:
    return torch.stack([x[:, :, i, i:i + width] for i in range(x.shape[2])], dim=2)


class DiagonalLstm(nn.Module):
    def __init__(self, conn: np.ndarray, hidden: int, mirror: bool) -> None:
        super().__init__()
        self.input_to_state = MaskedConv(conn, (1, 1), (0, 0), (0, 0))
        self.state_to_state = nn.Conv1d(hidden, 4 * hidden, 2, padding=0)
        self.hidden, self.mirror = hidden, mirror

    def probe_parameters(self, gen: torch.Generator) -> None:
        _probe_lstm(self.input_to_state, self.state_to_state, self.hidden, gen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mirror:
            x = x.flip(-1)
        width = x.shape[-1]
        pre = skew(self.input_to_state(x))                        # (B, 4h, H, W + H - 1)
        b, _, height, columns = pre.shape
        h = pre.new_zeros(b, self.hidden, height)
        c = torch.zeros_like(h)
        cols = []
        for j in range(columns):
            # the state at row r reads the previous column's rows r-1 and r (a 2x1 convolution)
            gates = pre[:, :, :, j] + (self.state_to_state(F.pad(h, (1, 0))) if j else 0)
            h, c = _lstm_update(gates, c)
            cols.append(h)
        out = unskew(torch.stack(cols, dim=3), width)
        return out.flip(-1) if self.mirror else out


class _LstmOp(Op):
    def _check(self, spec, inp: TensorType, ctx: LowerContext) -> None:
        if len(inp.spatial) != 2:
            raise ShapeError(f"{self.name} needs an image input, got spatial shape {list(inp.spatial)}", "inputs")
        if spec.hidden % ctx.groups:
            raise ShapeError(f"hidden must be a multiple of the {ctx.groups} data channels, got {spec.hidden}", "hidden")
        if 4 * spec.hidden * (inp.channels + spec.hidden) * 3 > 200_000_000:
            raise ShapeError(f"layer too large: hidden {spec.hidden}", "hidden")

    def footprint(self, spec, attrs, inputs: Sequence[Deps], out: TensorType, mask: int) -> Deps:
        g = attrs["input_geometry"]
        pre = inputs[0].conv(g["conn"], (1, 1), g["pad_before"], out.spatial)
        return pre.closure(attrs["state_offsets"], attrs["groups"], out.channels, out.spatial)


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
        offsets = [(-1, dx) for dx in range(-half, half + 1)]
        attrs = {"input_geometry": {"conn": conn, "pad_before": (0, half)}, "state_offsets": offsets, "groups": ctx.groups}
        return TensorType(spec.hidden, inp.spatial), attrs

    def build(self, spec, attrs, inputs, out, ctx):
        return RowLstm(attrs["input_geometry"]["conn"], spec.hidden, spec.kernel)

    def parameter_count(self, spec, attrs, inputs, out):
        h = spec.hidden
        return 4 * h * inputs[0].channels * (spec.kernel // 2 + 1) + 4 * h + 4 * h * h * spec.kernel + 4 * h


@register_op
class DiagonalLstmOp(_LstmOp):
    name = "diagonal_lstm"
    Spec = DiagonalLstmSpec

    def infer(self, spec: DiagonalLstmSpec, inputs: Sequence[TensorType], ctx: LowerContext) -> tuple[TensorType, dict[str, Any]]:
        inp = inputs[0]
        self._check(spec, inp, ctx)
        conn = _gate_layout(spec.hidden, inp.channels, ctx.groups, spec.mask)[:, :, None, None]
        side = -1 if spec.direction == "left" else 1
        attrs = {"input_geometry": {"conn": conn, "pad_before": (0, 0)}, "state_offsets": [(0, side), (-1, 0)], "groups": ctx.groups}
        return TensorType(spec.hidden, inp.spatial), attrs

    def build(self, spec, attrs, inputs, out, ctx):
        return DiagonalLstm(attrs["input_geometry"]["conn"], spec.hidden, spec.direction == "right")

    def parameter_count(self, spec, attrs, inputs, out):
        h = spec.hidden
        return 4 * h * inputs[0].channels + 4 * h + 4 * h * h * 2 + 4 * h
