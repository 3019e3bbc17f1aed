"""The op interface. An op declares, in its own file: its spec parameters (a pydantic model), its
shape rule (`infer`) and its semantics as a program of backend primitives (`semantics`). Its
dependency footprint, parameter count, torch (or other) implementation and cached generation all
follow from the primitives, so the mask the verifier reads is the mask a backend multiplies by."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from arspec.identifiers import Identifier
from arspec.primitives.program import ProgramBuilder, Value
from arspec.types import TensorType


class NodeSpec(BaseModel):
    """Fields every graph node has, whatever its op."""

    model_config = ConfigDict(extra="forbid")

    op: str
    inputs: list[str] | None = Field(None, description="Input node names; defaults to the previous node (or x for the first).")
    condition: list[str] = Field(default_factory=list, description="Conditioning inputs (or context-only nodes) added inside this op.")
    residual: str | None = Field(None, description="A node (or 'in' inside a block) added to this op's output.")
    output: Identifier | None = Field(None, description="Inside a block: export this node under that name (summed over repeats).")
    repeat: RepeatSpec | None = Field(None, description="Chain this op with itself, with per-iteration values.")
    description: str | None = None


class CycleSpec(BaseModel):
    """Values cycled `times` times: cycle [1, 2, 4] times 2 -> 1 2 4 1 2 4."""

    model_config = ConfigDict(extra="forbid")
    cycle: list[Any] = Field(min_length=1)
    times: int = Field(1, ge=1, le=10_000)


class RepeatSpec(BaseModel):
    """`times` iterations, or per-iteration values for named parameters (lists or cycles)."""

    model_config = ConfigDict(extra="allow")
    times: int | None = Field(None, ge=1, le=10_000)

    def values(self) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for key, value in (self.model_extra or {}).items():
            if isinstance(value, dict):
                value = CycleSpec.model_validate(value)
            if isinstance(value, CycleSpec):
                out[key] = list(value.cycle) * value.times
            elif isinstance(value, list):
                out[key] = list(value)
            else:
                out[key] = [value]
        return out


NodeSpec.model_rebuild()


class ShapeError(Exception):
    """An op cannot accept its inputs; `field` names the offending parameter."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


@dataclass
class LowerContext:
    """What ops may know about the model while lowering: the event, ordering(s) and output size."""

    event: tuple[int, ...]                   # internal (C, *S)
    params_per_element: int
    orders: list[np.ndarray]                 # per mask set: flat step of each element
    masks: int = 1
    classes: int | None = None               # of a discrete distribution (what an embedding reads)
    seed: int = 0
    couples_channels: bool = False           # the distribution reads a pixel's channels jointly
    conditioning: dict[str, Any] = field(default_factory=dict)
    agnostic: bool = False                   # order-agnostic: the graph input `observed` exists
    ordering_seed: int = 0                   # of an order-agnostic model's evaluation orderings

    @property
    def groups(self) -> int:
        return self.event[0]

    @property
    def spatial(self) -> tuple[int, ...]:
        return tuple(self.event[1:])

    @property
    def elements(self) -> int:
        return int(np.prod(self.event))

    def order(self, mask: int) -> np.ndarray:
        return self.orders[mask % len(self.orders)]


class Op:
    """Base of every op. Subclasses set `name` and `Spec` and implement `infer` and `semantics`."""

    name: ClassVar[str]
    Spec: ClassVar[type[NodeSpec]]
    min_inputs: ClassVar[int] = 1
    max_inputs: ClassVar[int | None] = 1
    moves_only: ClassVar[bool] = False       # only rearranges values (leak reports blame a computing node)
    reads_data_only: ClassVar[bool] = False  # its input must be the data x itself (the observe gate)

    def infer(self, spec: Any, inputs: Sequence[TensorType], ctx: LowerContext) -> tuple[TensorType, dict[str, Any]]:
        """Shape rule: the output type and attributes derived while lowering (masks, degrees, ...).
        Raise ShapeError for inputs the op cannot take."""
        raise NotImplementedError

    def semantics(self, spec: Any, attrs: dict[str, Any], b: ProgramBuilder, inputs: Sequence[Value], ctx: LowerContext) -> Value:
        """The op as primitives: call `b.call(...)` on `inputs` and return the result."""
        raise NotImplementedError

    def extra_inputs(self, spec: Any) -> list[str]:
        """Nodes the op reads besides its `inputs` (MADE's direct connections read x)."""
        return []

    def input_frame(self, spec: Any) -> tuple[int, ...] | None:
        """A shift the op applies to its input before its output serves a position (a conv_lstm
        shifted by a frame): what feeds it may read that far ahead; leak messages then judge a
        value that also goes elsewhere where it joins that other path."""
        return None

    def requires_shift(self, spec: Any) -> tuple[int, ...] | None:
        """A shift the op's output needs before it joins values of its own positions (a vertical
        stack reads the current row: by [1, 0]); leak messages use it for their hint."""
        return None


def output_channels(value: int | str, ctx: LowerContext, dense: bool = False) -> int:
    """Resolve `channels: output` to the number of distribution parameters the head must produce."""
    if value == "output":
        return ctx.params_per_element * (ctx.elements if dense else ctx.groups)
    return int(value)
