"""conv_lstm — a convolutional LSTM running over the frames of a video (the Video Pixel Network's
temporal core, Kalchbrenner et al. 2016).

An input-to-state convolution over each frame (k×k, every channel: what feeds it only ever sees
frames that are complete), then the LSTM recurrence over time (`ConvLstm`), then a shift of `shift`
frames. The state after frame t has read frame t; shifted by one frame it reaches the decoder of
frame t+1, which may read only earlier frames. `shift: 1` is the default and what a VPN needs; the
verifier reports a state that reaches the frame it has read (shift 0)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field

from arspec.ops.base import LowerContext, NodeSpec, Op, ShapeError
from arspec.ops.fields import guard_layer, odd_kernel
from arspec.ops.registry import register_op
from arspec.primitives import ConvLstm, MaskedConv, SelectChannels, Shift
from arspec.primitives.program import ProgramBuilder, Value
from arspec.types import TensorType


class ConvLstmSpec(NodeSpec):
    op: Literal["conv_lstm"]
    hidden: int = Field(ge=1, le=100_000, description="State channels.")
    kernel: int = Field(3, ge=1, le=1025, description="Odd size of the input-to-state and state-to-state kernels.")
    shift: int = Field(1, ge=0, le=1_000_000, description=(
        "Frames the state is delayed by: the state for frame t is the one after frame t - shift (1: it has read frames < t)."))


@register_op
class ConvLstmOp(Op):
    name = "conv_lstm"
    Spec = ConvLstmSpec

    def infer(self, spec: ConvLstmSpec, inputs: Sequence[TensorType], ctx: LowerContext) -> tuple[TensorType, dict[str, Any]]:
        inp = inputs[0]
        if len(inp.spatial) != 3:
            raise ShapeError(f"conv_lstm needs a video input (spatial [T, H, W]), got spatial shape {list(inp.spatial)}", "inputs")
        odd_kernel((spec.kernel,), self.name)
        guard_layer(4 * spec.hidden, inp.channels + spec.hidden, spec.kernel * spec.kernel)
        k, half = spec.kernel, spec.kernel // 2
        conn = np.ones((4 * spec.hidden, inp.channels, 1, k, k), dtype=bool)
        return TensorType(spec.hidden, inp.spatial), {
            "input_to_state": MaskedConv(conn, (1, 1, 1), (0, half, half), (0, half, half), bias=False),
            "scan": ConvLstm(spec.hidden, k), "h": SelectChannels(np.arange(spec.hidden))}

    def semantics(self, spec: ConvLstmSpec, attrs: dict[str, Any], b: ProgramBuilder, inputs: Sequence[Value], ctx: LowerContext) -> Value:
        cell = b.call("scan", attrs["scan"], b.call("input_to_state", attrs["input_to_state"], inputs[0]))     # [h, c]
        state = b.call("h", attrs["h"], cell)
        return b.call("shift", Shift((spec.shift, 0, 0)), state) if spec.shift else state

    def requires_shift(self, spec: ConvLstmSpec) -> tuple[int, ...] | None:
        return None if spec.shift else (1, 0, 0)

    def input_frame(self, spec: ConvLstmSpec) -> tuple[int, ...] | None:
        return (spec.shift, 0, 0) if spec.shift else None
