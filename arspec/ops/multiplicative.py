"""multiplicative_unit / residual_multiplicative_block — the building blocks of the Video Pixel
Network (Kalchbrenner et al. 2016).

A multiplicative unit (MU) maps h to g1 ⊙ tanh(g2 ⊙ h + g3 ⊙ u), where the gates g1, g2, g3 =
σ(W_i * h) and the update u = tanh(W_4 * h) come from one convolution of h (four chunks of the
input's channels). A residual multiplicative block (RMB) narrows the input with a 1×1
convolution, applies two MUs and widens back, plus the input. Over a video both act frame by frame
(a kernel of extent 1 over time). `mask` shapes the gate convolutions within the frame: `none` for
the encoders (which only ever see earlier frames), `B` raster-masked as in PixelCNN, or the two
stacks of Gated PixelCNN, `vertical` and `horizontal`, for a decoder without a blind spot. A second
input — the context of earlier frames — is projected 1×1 into every gate (the decoder's
conditioning). The ops are programs of masked convolutions, channel selections and pointwise
primitives, so their footprint, parameters and cached generation follow from those."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field

from arspec.ops.base import LowerContext, Op, ShapeError
from arspec.ops.convolution import per_frame
from arspec.ops.fields import Dilation, guard_layer, odd_kernel
from arspec.ops.masks import GroupedMaskSpec, group_connectivity, groups_of, raster_kernel_mask
from arspec.ops.registry import register_op
from arspec.primitives import Activation, Add, MaskedConv, Multiply, SelectChannels
from arspec.primitives.program import ProgramBuilder, Value
from arspec.types import TensorType

MuMask = Literal["none", "B", "vertical", "horizontal"]
MASK_HELP = ("none: every tap of the frame (encoders); B: raster-masked within the frame (PixelCNN decoders, which "
             "have a blind spot); vertical / horizontal: Gated PixelCNN's two stacks (rows above and the current row, "
             "to be shifted down one row before the horizontal stack reads it / the current row up to the pixel)")


class MultiplicativeUnitSpec(GroupedMaskSpec):
    op: Literal["multiplicative_unit"]
    kernel: int = Field(3, ge=1, le=1025, description="Odd size of the gates' square kernel.")
    dilation: Dilation = 1
    mask: MuMask = Field("none", description=MASK_HELP)
    bias: bool = True


class ResidualMultiplicativeBlockSpec(GroupedMaskSpec):
    op: Literal["residual_multiplicative_block"]
    hidden: int | None = Field(None, ge=1, le=1_000_000, description="Channels inside the block (default: half the input's).")
    kernel: int = Field(3, ge=1, le=1025, description="Odd size of the MUs' square kernels.")
    dilation: Dilation | list[Dilation] = Field(1, description="Dilation of both MUs, or one per MU.")
    mask: MuMask = Field("none", description=MASK_HELP)
    bias: bool = True


def _unit_inputs(name: str, spec: Any, inputs: Sequence[TensorType], ctx: LowerContext) -> tuple[TensorType, TensorType | None, int]:
    """The checked input h (an image or a video), the optional context beside it, and the channel
    groups the unit orders (h's channels a multiple of them)."""
    inp = inputs[0]
    if len(inp.spatial) not in (2, 3):
        raise ShapeError(f"{name} needs an image or a video input, got spatial shape {list(inp.spatial)}", "inputs")
    if len(inputs) > 1 and tuple(inputs[1].spatial) != tuple(inp.spatial):
        raise ShapeError(f"{name}: the context input has spatial shape {list(inputs[1].spatial)}, "
                         f"the input {list(inp.spatial)}", "inputs")
    groups = ordered_groups(spec, ctx)
    _groups_fit(inp.channels, groups, "the input's channels")
    return inp, (inputs[1] if len(inputs) > 1 else None), groups


def gate_conv(mask: MuMask, kernel: int, dilation: int, channels: int, groups: int, rank: int, bias: bool) -> MaskedConv:
    """The gate convolution (4 chunks of `channels`) of one MU over a frame, lifted to frames over a
    video (rank 3)."""
    k, half, d = kernel, kernel // 2, dilation
    if mask == "vertical":
        conn = np.ones((channels, channels, half + 1, k), dtype=bool)
        before, after = (d * half, d * half), (0, d * half)
    elif mask == "horizontal":
        conn = np.ones((channels, channels, 1, half + 1), dtype=bool)
        conn[:, :, 0, half] = group_connectivity(channels, channels, groups, "B")
        before, after = (0, d * half), (0, 0)
    else:
        conn = (raster_kernel_mask((k, k), channels, channels, groups, "B") if mask == "B"
                else np.ones((channels, channels, k, k), dtype=bool))
        before = after = (d * half, d * half)
    conv = MaskedConv(np.concatenate([conn] * 4), (d, d), before, after, bias=bias)
    return per_frame(conv) if rank == 3 else conv


def _pointwise(co: int, ci: int, groups: int, mask: MuMask, rank: int, bias: bool) -> MaskedConv:
    """A 1×1 convolution, channel-group masked (B, horizontal) or not."""
    conn = group_connectivity(co, ci, groups, "B" if mask in ("B", "horizontal") else "none")
    return MaskedConv(conn.reshape((co, ci) + (1,) * rank), (1,) * rank, (0,) * rank, (0,) * rank, bias=bias)


def mu_attrs(channels: int, context: TensorType | None, kernel: int, dilation: int, mask: MuMask, groups: int,
             rank: int, bias: bool) -> dict[str, Any]:
    """The primitives of one MU over `channels` channels: the gate convolution (chunks [g1, g2, g3,
    u], channel j of each chunk serving data channel group j mod G) and the context projection."""
    odd_kernel((kernel,), "multiplicative_unit")
    guard_layer(4 * channels, channels, kernel * kernel)
    attrs: dict[str, Any] = {"gates": gate_conv(mask, kernel, dilation, channels, groups, rank, bias), "channels": channels}
    if context is not None:
        guard_layer(4 * channels, context.channels, 1)
        attrs["context"] = _pointwise(4 * channels, context.channels, groups, "none", rank, False)
    return attrs


def mu_program(attrs: dict[str, Any], b: ProgramBuilder, h: Value, context: Value | None) -> Value:
    """g1 ⊙ tanh(g2 ⊙ h + g3 ⊙ u) as primitives."""
    c = attrs["channels"]
    pre = b.call("gates", attrs["gates"], h)
    if context is not None:
        pre = b.call("with_context", Add(), pre, b.call("context", attrs["context"], context))
    g1, g2, g3, u = (b.call(name, SelectChannels(np.arange(k * c, (k + 1) * c)), pre)
                     for k, name in enumerate(("g1", "g2", "g3", "u")))
    g1, g2, g3 = (b.call(f"sigmoid_{v.name}", Activation("sigmoid"), v) for v in (g1, g2, g3))
    u = b.call("tanh_u", Activation("tanh"), u)
    inner = b.call("inner", Add(), b.call("g2_h", Multiply(), g2, h), b.call("g3_u", Multiply(), g3, u))
    return b.call("mu", Multiply(), g1, b.call("tanh_inner", Activation("tanh"), inner))


def ordered_groups(spec: Any, ctx: LowerContext) -> int:
    """The channel groups a unit orders at the current pixel: the event's (or `channel_groups`)
    under masks B and horizontal; none (1) for units that never read the current pixel's later
    channels alongside earlier ones (unmasked encoders, the vertical stack, which is shifted)."""
    return groups_of(spec, ctx) if spec.mask in ("B", "horizontal") else 1


def _groups_fit(channels: int, groups: int, what: str) -> None:
    if channels % groups:
        raise ShapeError(f"{what} must be a multiple of the {groups} channel groups, got {channels}", "channels")


@register_op
class MultiplicativeUnit(Op):
    name = "multiplicative_unit"
    Spec = MultiplicativeUnitSpec
    max_inputs = 2

    def infer(self, spec: MultiplicativeUnitSpec, inputs: Sequence[TensorType], ctx: LowerContext) -> tuple[TensorType, dict[str, Any]]:
        inp, context, groups = _unit_inputs(self.name, spec, inputs, ctx)
        return TensorType(inp.channels, inp.spatial), mu_attrs(inp.channels, context, spec.kernel, spec.dilation, spec.mask,
                                                               groups, len(inp.spatial), spec.bias)

    def semantics(self, spec: Any, attrs: dict[str, Any], b: ProgramBuilder, inputs: Sequence[Value], ctx: LowerContext) -> Value:
        return mu_program(attrs, b, inputs[0], inputs[1] if len(inputs) > 1 else None)

    def requires_shift(self, spec: Any) -> tuple[int, ...] | None:
        return (1, 0) if spec.mask == "vertical" else None            # within each frame of a video


@register_op
class ResidualMultiplicativeBlock(Op):
    name = "residual_multiplicative_block"
    Spec = ResidualMultiplicativeBlockSpec
    max_inputs = 2

    def infer(self, spec: ResidualMultiplicativeBlockSpec, inputs: Sequence[TensorType], ctx: LowerContext) -> tuple[TensorType, dict[str, Any]]:
        inp, context, groups = _unit_inputs(self.name, spec, inputs, ctx)
        rank = len(inp.spatial)
        hidden = spec.hidden or max(groups, inp.channels // 2)
        _groups_fit(hidden, groups, "hidden")
        dilations = spec.dilation if isinstance(spec.dilation, list) else [spec.dilation] * 2
        if len(dilations) != 2:
            raise ShapeError(f"dilation needs one value or one per MU (2), got {spec.dilation}", "dilation")
        guard_layer(hidden, inp.channels, 1)
        return TensorType(inp.channels, inp.spatial), {
            "narrow": _pointwise(hidden, inp.channels, groups, spec.mask, rank, spec.bias),
            "mu": [mu_attrs(hidden, context, spec.kernel, d, spec.mask, groups, rank, spec.bias) for d in dilations],
            "widen": _pointwise(inp.channels, hidden, groups, spec.mask, rank, spec.bias)}

    def semantics(self, spec: Any, attrs: dict[str, Any], b: ProgramBuilder, inputs: Sequence[Value], ctx: LowerContext) -> Value:
        h, context = inputs[0], (inputs[1] if len(inputs) > 1 else None)
        inner = b.call("narrow", attrs["narrow"], h)
        for mu in attrs["mu"]:
            inner = mu_program(mu, b, inner, context)
        return b.call("block", Add(), h, b.call("widen", attrs["widen"], inner))

    def requires_shift(self, spec: Any) -> tuple[int, ...] | None:
        return (1, 0) if spec.mask == "vertical" else None            # within each frame of a video
