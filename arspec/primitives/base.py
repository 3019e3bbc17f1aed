"""The primitive interface. A primitive is plain data (numbers and numpy arrays) that says, in one
place, everything the rest of arspec needs to know about one backend operation:

* `out_type` — the shape rule;
* `params` / `buffers` / `attrs` — the trainable parameters a backend creates (shape and
  initialisation), the constant arrays it needs (masks, indices) and static attributes;
* `footprint` — the dependency rule, written with the domain rules of `arspec.domains`, so the
  same code runs in the per-position and the offset domain;
* `taps` — for cached generation, which input positions the value at a position reads, when the
  primitive is position-local (None otherwise); `scan_role` for the ordered scan of NADE-like models;
* `step` — what it computes at one position, in the step IR (`arspec.primitives.step`), from which
  every cached-generation engine lowers it (None where it has no per-position step);
* `probe` — parameter values that keep every dependency measurable in the dynamic check.

A backend implements each `kind`; an op's semantics is a small program of primitives."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from arspec.domains import Deps
from arspec.types import TensorType

if TYPE_CHECKING:
    from arspec.primitives.step import StepBuilder

Init = Literal["normal", "uniform", "zeros", "ones"]
ScanRole = Literal["prefix", "element", "emit"]


@dataclass(frozen=True)
class Param:
    """A trainable parameter: its shape and how a backend initialises it (normal with standard
    deviation `scale`, uniform on [-scale, scale], zeros or ones)."""

    shape: tuple[int, ...]
    init: Init = "normal"
    scale: float = 1.0

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class Taps:
    """What a position-local primitive's value at position p reads from one argument: the values
    at p + offset for each offset (zero outside the tensor). `live[k]` says whether offset k can
    carry a dependency (a masked tap is read but multiplies an exact zero)."""

    offsets: tuple[tuple[int, ...], ...]
    live: tuple[bool, ...]


def same_position(rank: int, arguments: int = 1) -> list[Taps]:
    """The taps of a pointwise primitive: each argument at the same position."""
    return [Taps(((0,) * rank,), (True,)) for _ in range(arguments)]


class Primitive:
    """Base of every primitive; subclasses are dataclasses holding the static description."""

    kind: ClassVar[str]
    reads_raw: ClassVar[bool] = False          # reads the data as class indices, not its float encoding
    mask_sets: ClassVar[bool] = False          # selects its mask set by the model's active mask
    uses_training_mode: ClassVar[bool] = False  # behaves differently while training (dropout)
    scan_role: ClassVar[ScanRole | None] = None
    per_element: ClassVar[bool] = False         # an "element" scan step that also takes the element index
    min_args: ClassVar[int] = 1
    max_args: ClassVar[int | None] = 1

    def out_type(self, args: Sequence[TensorType]) -> TensorType:
        """The type of the result given the argument types."""
        raise NotImplementedError

    def params(self) -> dict[str, Param]:
        return {}

    def buffers(self) -> dict[str, np.ndarray]:
        return {}

    def attrs(self) -> dict[str, Any]:
        """Static attributes a backend passes to the kernel (ints, floats, strings, tuples)."""
        return {}

    def footprint(self, args: Sequence[Deps], out: TensorType, mask: int) -> Deps:
        """The result's dependency sets from the arguments' (mask: the mask set analysed)."""
        raise NotImplementedError

    def taps(self, rank: int, arguments: int) -> list[Taps] | None:
        """Per argument, the positions read at an output position; None if not position-local."""
        return None

    def step(self, b: StepBuilder) -> int | None:
        """The value at one position, declared with `b` (its arguments' channels in
        `b.arg_channels`); None where the primitive has no per-position step, and an engine needs
        a rule of its own for its kind or runs it on the torch path."""
        return None

    def probe(self, name: str, rng: np.random.Generator) -> np.ndarray | None:
        """Values for parameter `name` during the dynamic check, or None for generic random ones."""
        return None

    @property
    def parameter_count(self) -> int:
        return sum(p.numel for p in self.params().values())
