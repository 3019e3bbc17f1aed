"""observe — the data gate of order-agnostic models (Uria et al. 2014): x times the mask of observed
elements. Its result reveals x only where an element is given already, so, for the dependency
analysis, it reads no data to be predicted: its footprint is that of the mask, which is no data at
all. The `observe` op guarantees that its first argument is the data x itself (a gate over a
function that mixes elements would reveal unobserved elements through observed ones).

For the dynamic check the prediction is made for one concrete mask: inside `given_elements(mask)`
the gate passes on exactly the data elements the mask marks as observed."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np

from arspec.domains import Deps
from arspec.primitives.base import Primitive, Taps, same_position
from arspec.types import TensorType

_GIVEN: ContextVar[np.ndarray | None] = ContextVar("observed_elements", default=None)


@contextmanager
def given_elements(observed: np.ndarray) -> Iterator[None]:
    """Predict dependencies for this mask (flat booleans over the event) instead of for all masks."""
    token = _GIVEN.set(np.asarray(observed, dtype=bool).reshape(-1))
    try:
        yield
    finally:
        _GIVEN.reset(token)


@dataclass(eq=False)
class ObserveGate(Primitive):
    """observe(x, observed) = x * observed, elementwise."""

    kind = "observe"
    min_args = 2
    max_args = 2

    def out_type(self, args: Sequence[TensorType]) -> TensorType:
        return TensorType(args[0].channels, args[0].spatial)

    def footprint(self, args: Sequence[Deps], out: TensorType, mask: int) -> Deps:
        given = _GIVEN.get()
        if given is None:
            return args[1]          # whatever the mask: nothing that is not given already
        return args[0].only_sources(given)

    def taps(self, rank: int, arguments: int) -> list[Taps] | None:
        return same_position(rank, arguments)
