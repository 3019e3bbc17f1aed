"""The op interface: each op declares, in one place, its spec parameters, shape rule, dependency
footprint and torch implementation. Ops register themselves by name in `OPS`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from arspec.analysis.deps import Deps

Activation = Literal["none", "relu", "elu", "tanh", "sigmoid", "gated"]
Channels = Annotated[int, Field(ge=1, le=1_000_000)] | Literal["output"]
KernelSize = Annotated[int, Field(ge=1, le=4096)]


class NodeSpec(BaseModel):
    """Fields every graph node has, whatever its op."""

    model_config = ConfigDict(extra="forbid")

    op: str
    inputs: list[str] | None = Field(None, description="Input node names; defaults to the previous node (or x for the first).")
    condition: list[str] = Field(default_factory=list, description="Conditioning inputs (or context-only nodes) added inside this op.")
    residual: str | None = Field(None, description="A node (or 'in' inside a block) added to this op's output.")
    output: str | None = Field(None, description="Inside a block: export this node under that name (summed over repeats).")
    repeat: "RepeatSpec | None" = Field(None, description="Chain this op with itself, with per-iteration values.")
    description: str | None = None


class CycleSpec(BaseModel):
    """Values cycled `times` times: cycle [1, 2, 4] times 2 -> 1 2 4 1 2 4."""

    model_config = ConfigDict(extra="forbid")
    cycle: list[Any] = Field(min_length=1)
    times: int = Field(1, ge=1, le=10_000)


RepeatValue = int | list[Any] | CycleSpec


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


@dataclass
class TensorType:
    """The type of an IR tensor: channels and spatial extent (empty for dense vectors).

    `degrees` (MADE) holds, per mask, the autoregressive degree of each unit of a dense tensor."""

    channels: int
    spatial: tuple[int, ...]
    degrees: list[np.ndarray] | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.channels, *self.spatial)

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


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
    orders: list[np.ndarray]                 # per mask: flat step of each element
    masks: int = 1
    conditioning: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    couples_channels: bool = False           # the distribution reads a pixel's channels jointly

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
    """Base of every op. Subclasses set `name` and `Spec` and implement the four rules."""

    name: ClassVar[str]
    Spec: ClassVar[type[NodeSpec]]
    min_inputs: ClassVar[int] = 1
    max_inputs: ClassVar[int | None] = 1
    reads_raw_data: ClassVar[bool] = False     # receives x as class indices, not its float encoding
    data_dependent_masks: ClassVar[bool] = False  # footprint differs per MADE mask
    moves_only: ClassVar[bool] = False            # only rearranges values (space_to_depth, ...)

    def infer(self, spec: Any, inputs: Sequence[TensorType], ctx: LowerContext) -> tuple[TensorType, dict[str, Any]]:
        """Shape rule: the output type and any attributes (masks, degrees) derived while lowering."""
        raise NotImplementedError

    def footprint(self, spec: Any, attrs: dict[str, Any], inputs: Sequence[Deps], out: TensorType, mask: int) -> Deps:
        """Dependency footprint: the output's dependency sets from its inputs'."""
        raise NotImplementedError

    def build(self, spec: Any, attrs: dict[str, Any], inputs: Sequence[TensorType], out: TensorType, ctx: LowerContext):
        """Torch implementation: an nn.Module whose forward takes the input tensors (batched)."""
        raise NotImplementedError

    def parameter_count(self, spec: Any, attrs: dict[str, Any], inputs: Sequence[TensorType], out: TensorType) -> int:
        """Number of trainable parameters, computed before anything is allocated (size guards)."""
        return 0

    #: optional: `sampler(module) -> callable` giving cached generation for a model that is this op
    #: alone on x (NADE); convolutional graphs get theirs from runtime.incremental instead
    sampler = None


OPS: dict[str, Op] = {}


def register_op(cls: type[Op]) -> type[Op]:
    """Class decorator: make an op available to specs under `cls.name`."""
    OPS[cls.name] = cls()
    return cls


def output_channels(value: int | str, ctx: LowerContext, dense: bool = False) -> int:
    """Resolve `channels: output` to the number of distribution parameters the head must produce."""
    if value == "output":
        return ctx.params_per_element * (ctx.elements if dense else ctx.groups)
    return int(value)
