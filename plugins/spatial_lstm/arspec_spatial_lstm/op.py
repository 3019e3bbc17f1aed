"""The `spatial_lstm` op: a Spatial LSTM layer over an image event's positions.

    lstm1: {op: spatial_lstm, inputs: [x], hidden: 32, window: 2, center: false}   # the first layer: strictly earlier pixels
    lstm2: {op: spatial_lstm, hidden: 32}                                          # stacked: the previous layer at (i, j)"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field

from arspec.ops.base import LowerContext, NodeSpec, Op, ShapeError
from arspec.primitives import SelectChannels
from arspec.primitives.program import ProgramBuilder, Value
from arspec.types import TensorType
from arspec_spatial_lstm.primitive import SpatialLstm, neighbourhood


class SpatialLstmSpec(NodeSpec):
    op: Literal["spatial_lstm"]
    hidden: int = Field(ge=1, le=4096, description="Units of the cell and hidden state.")
    window: int = Field(0, ge=0, le=8, description="Rows above and pixels to the left read from the input (0: the pixel itself only).")
    center: bool = Field(True, description="Read the input at the pixel itself (false for a first layer that reads x).")
    mask: Literal["A", "B"] = Field("B", description=(
        "With channel groups (R -> G -> B): at the pixel itself, read earlier groups only (A: a first layer that reads x) "
        "or also its own (B)."))


class SpatialLstmOp(Op):
    name = "spatial_lstm"
    Spec = SpatialLstmSpec

    def infer(self, spec: SpatialLstmSpec, inputs: Sequence[TensorType], ctx: LowerContext) -> tuple[TensorType, dict[str, Any]]:
        if len(inputs[0].spatial) != 2:
            raise ShapeError(f"a Spatial LSTM runs over images [C, H, W]; its input has {len(inputs[0].spatial)} spatial axes", "inputs")
        offsets = neighbourhood(spec.window, spec.center)
        if not offsets:
            raise ShapeError("window: 0 with center: false reads nothing of the input", "window")
        if spec.hidden % ctx.groups:
            raise ShapeError(f"hidden must be a multiple of the {ctx.groups} channel groups (unit u serves group u mod {ctx.groups})", "hidden")
        return TensorType(spec.hidden, inputs[0].spatial), {"offsets": offsets}

    def semantics(self, spec: SpatialLstmSpec, attrs: dict[str, Any], b: ProgramBuilder, inputs: Sequence[Value], ctx: LowerContext) -> Value:
        cell = SpatialLstm(spec.hidden, inputs[0].type.channels, attrs["offsets"], ctx.groups, spec.mask)
        state = b.call("cell", cell, inputs[0])
        return b.call("h", SelectChannels(np.arange(spec.hidden)), state)
