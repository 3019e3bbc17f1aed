"""Primitives that never mix positions: activations, sums and products, concatenation, the gated
unit, channel selection, and shifts (a whole tensor moved by a fixed offset)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from arspec.domains import Deps
from arspec.primitives.base import Primitive, Taps, same_position
from arspec.primitives.step import StepBuilder
from arspec.types import TensorType

ActivationName = Literal["relu", "elu", "tanh", "sigmoid", "identity"]


@dataclass(eq=False)
class Activation(Primitive):
    """An elementwise nonlinearity."""

    kind = "activation"
    scan_role = "element"

    fn: ActivationName

    def out_type(self, args: Sequence[TensorType]) -> TensorType:
        return TensorType(args[0].channels, args[0].spatial)

    def attrs(self) -> dict[str, Any]:
        return {"fn": self.fn}

    def footprint(self, args: Sequence[Deps], out: TensorType, mask: int) -> Deps:
        return args[0]

    def taps(self, rank: int, arguments: int) -> list[Taps] | None:
        return same_position(rank)

    def step(self, b: StepBuilder) -> int:
        return b.act(self.fn, b.read(0, (0,) * b.rank))


@dataclass(eq=False)
class _Merge(Primitive):
    min_args = 2
    max_args = None

    def out_type(self, args: Sequence[TensorType]) -> TensorType:
        return TensorType(args[0].channels, args[0].spatial)

    def footprint(self, args: Sequence[Deps], out: TensorType, mask: int) -> Deps:
        acc = args[0]
        for d in args[1:]:
            acc = acc.union(d)
        return acc

    def taps(self, rank: int, arguments: int) -> list[Taps] | None:
        return same_position(rank, arguments)

    def step(self, b: StepBuilder) -> int:
        reads = [b.read(i, (0,) * b.rank) for i in range(len(b.arg_channels))]
        return b.add(*reads) if self.kind == "add" else b.mul(*reads)


@dataclass(eq=False)
class Add(_Merge):
    """The sum of its arguments (same shape; a global context term broadcasts over positions)."""

    kind = "add"


@dataclass(eq=False)
class Multiply(_Merge):
    """The product of its arguments."""

    kind = "multiply"


@dataclass(eq=False)
class Concat(Primitive):
    """Channels of its arguments side by side."""

    kind = "concat"
    min_args = 2
    max_args = None

    def out_type(self, args: Sequence[TensorType]) -> TensorType:
        return TensorType(sum(a.channels for a in args), args[0].spatial)

    def footprint(self, args: Sequence[Deps], out: TensorType, mask: int) -> Deps:
        return args[0].concat(list(args[1:]))

    def taps(self, rank: int, arguments: int) -> list[Taps] | None:
        return same_position(rank, arguments)

    def step(self, b: StepBuilder) -> int:
        return b.concat(*[b.read(i, (0,) * b.rank) for i in range(len(b.arg_channels))])


@dataclass(eq=False)
class Gate(Primitive):
    """tanh(a) * sigmoid(b) over the channel halves [a, b] (van den Oord et al. 2016)."""

    kind = "gate"

    def out_type(self, args: Sequence[TensorType]) -> TensorType:
        return TensorType(args[0].channels // 2, args[0].spatial)

    def footprint(self, args: Sequence[Deps], out: TensorType, mask: int) -> Deps:
        half = out.channels
        return args[0].select(np.arange(half)).union(args[0].select(np.arange(half, 2 * half)))

    def taps(self, rank: int, arguments: int) -> list[Taps] | None:
        return same_position(rank)

    def step(self, b: StepBuilder) -> int:
        return b.gate(b.read(0, (0,) * b.rank))


@dataclass(eq=False)
class SelectChannels(Primitive):
    """out[j] = in[index[j]]: a subset or permutation of channels."""

    kind = "select"

    index: np.ndarray

    def out_type(self, args: Sequence[TensorType]) -> TensorType:
        return TensorType(int(len(self.index)), args[0].spatial)

    def buffers(self) -> dict[str, np.ndarray]:
        return {"index": self.index.astype(np.int64)}

    def footprint(self, args: Sequence[Deps], out: TensorType, mask: int) -> Deps:
        return args[0].select(self.index)

    def taps(self, rank: int, arguments: int) -> list[Taps] | None:
        return same_position(rank)

    def step(self, b: StepBuilder) -> int:
        return b.pick(b.read(0, (0,) * b.rank), self.index.tolist())


@dataclass(eq=False)
class Shift(Primitive):
    """out[p] = in[p - by], zero where p - by falls outside (Gated PixelCNN's down-shift,
    WaveNet's one-step delay)."""

    kind = "shift"

    by: tuple[int, ...]

    def out_type(self, args: Sequence[TensorType]) -> TensorType:
        return TensorType(args[0].channels, args[0].spatial)

    def attrs(self) -> dict[str, Any]:
        return {"by": tuple(self.by)}

    def footprint(self, args: Sequence[Deps], out: TensorType, mask: int) -> Deps:
        channels = out.channels
        conn = np.eye(channels, dtype=bool).reshape((channels, channels) + (1,) * len(self.by))
        return args[0].conv(conn, (1,) * len(self.by), tuple(self.by), tuple(out.spatial))

    def taps(self, rank: int, arguments: int) -> list[Taps] | None:
        return [Taps((tuple(-b for b in self.by),), (True,))]

    def step(self, b: StepBuilder) -> int:
        return b.read(0, tuple(-x for x in self.by))


@dataclass(eq=False)
class Dropout(Primitive):
    """Zero each value with probability p while training (the rest scaled by 1/(1-p)); the identity
    in eval mode, where every verification runs — so its footprint is the identity."""

    kind = "dropout"
    uses_training_mode = True

    p: float

    def out_type(self, args: Sequence[TensorType]) -> TensorType:
        return TensorType(args[0].channels, args[0].spatial)

    def attrs(self) -> dict[str, Any]:
        return {"p": self.p}

    def footprint(self, args: Sequence[Deps], out: TensorType, mask: int) -> Deps:
        return args[0]

    def taps(self, rank: int, arguments: int) -> list[Taps] | None:
        return same_position(rank)

    def step(self, b: StepBuilder) -> int:
        return b.read(0, (0,) * b.rank)                           # cached generation runs in eval mode
