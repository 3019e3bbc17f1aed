"""The shared rule of every convolution-like op: it is one `masked_conv` primitive. A subclass only
says which taps and channels connect (`geometry`, returning the primitive); shape rule, size
guard and semantics follow, and so do the footprint, the parameters and cached generation."""
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

    def geometry(self, spec: Any, inp: TensorType, ctx: LowerContext) -> MaskedConv:
        raise NotImplementedError

    def infer(self, spec: Any, inputs: Sequence[TensorType], ctx: LowerContext) -> tuple[TensorType, dict[str, Any]]:
        inp = inputs[0]
        if not inp.spatial:
            raise ShapeError(f"{self.name} needs an input with spatial positions, got a dense vector of {inp.channels}", "inputs")
        if self.spatial_rank is not None and len(inp.spatial) != self.spatial_rank:
            raise ShapeError(f"{self.name} needs a {self.spatial_rank}-d input, got spatial shape {list(inp.spatial)}", "inputs")
        guard_layer(output_channels(getattr(spec, "channels", 1), ctx), inp.channels, taps_of(getattr(spec, "kernel", 1), len(inp.spatial)))
        conv = self.geometry(spec, inp, ctx)
        out_spatial = conv.out_spatial(inp.spatial)
        if any(s < 1 for s in out_spatial):
            raise ShapeError(f"the kernel does not fit: output spatial shape would be {list(out_spatial)}", "kernel")
        return TensorType(int(conv.connectivity.shape[0]), out_spatial), {"conv": conv}

    def semantics(self, spec: Any, attrs: dict[str, Any], b: ProgramBuilder, inputs: Sequence[Value], ctx: LowerContext) -> Value:
        return b.call("conv", attrs["conv"], inputs[0])
