"""The shared rule of every convolution-like op: it is one `masked_conv` primitive. A subclass only
says which taps and channels connect (`geometry`, returning the primitive); shape rule, size
guard and semantics follow, and so do the footprint, the parameters and cached generation.

An image op marked `framewise` also takes a video (spatial (T, H, W)): it then convolves each
frame on its own, a kernel of extent 1 over time (VPN's encoders and decoders)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from arspec.ops.base import LowerContext, Op, ShapeError, output_channels
from arspec.ops.fields import guard_layer, taps_of
from arspec.primitives import MaskedConv
from arspec.primitives.program import ProgramBuilder, Value
from arspec.types import TensorType


class ConvOp(Op):
    """Base of convolution-like ops; subclasses implement `geometry` and may fix `spatial_rank`."""

    spatial_rank: ClassVar[int | None] = None   # required rank of the input's spatial extent (None: any >= 1)
    framewise: ClassVar[bool] = False           # also takes one more leading axis (time), frame by frame

    def geometry(self, spec: Any, inp: TensorType, ctx: LowerContext) -> MaskedConv:
        raise NotImplementedError

    def infer(self, spec: Any, inputs: Sequence[TensorType], ctx: LowerContext) -> tuple[TensorType, dict[str, Any]]:
        inp = inputs[0]
        if not inp.spatial:
            raise ShapeError(f"{self.name} needs an input with spatial positions, got a dense vector of {inp.channels}", "inputs")
        frames = self.framewise and self.spatial_rank is not None and len(inp.spatial) == self.spatial_rank + 1
        if self.spatial_rank is not None and len(inp.spatial) != self.spatial_rank and not frames:
            video = " or a video (frames of that)" if self.framewise else ""
            raise ShapeError(f"{self.name} needs a {self.spatial_rank}-d input{video}, got spatial shape {list(inp.spatial)}", "inputs")
        rank = len(inp.spatial) - int(frames)
        guard_layer(output_channels(getattr(spec, "channels", 1), ctx), inp.channels, taps_of(getattr(spec, "kernel", 1), rank))
        if frames:
            conv = per_frame(self.geometry(spec, TensorType(inp.channels, inp.spatial[1:]), ctx))
        else:
            conv = self.geometry(spec, inp, ctx)
        out_spatial = conv.out_spatial(inp.spatial)
        if any(s < 1 for s in out_spatial):
            raise ShapeError(f"the kernel does not fit: output spatial shape would be {list(out_spatial)}", "kernel")
        return TensorType(int(conv.connectivity.shape[0]), out_spatial), {"conv": conv}

    def semantics(self, spec: Any, attrs: dict[str, Any], b: ProgramBuilder, inputs: Sequence[Value], ctx: LowerContext) -> Value:
        return b.call("conv", attrs["conv"], inputs[0])


def per_frame(conv: MaskedConv) -> MaskedConv:
    """A convolution over frames lifted to a video: extent 1 over time, so each frame is convolved
    on its own and reads nothing of the other frames."""
    return MaskedConv(conv.connectivity[:, :, None], (1, *conv.dilation), (0, *conv.pad_before), (0, *conv.pad_after),
                      stride=None if conv.stride is None else (1, *conv.stride), bias=conv.bias)
