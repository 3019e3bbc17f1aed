"""Primitives along the generation order, for NADE-like models (Larochelle & Murray 2011).

`ordered_prefix_linear`: element e gets bias + sum over elements e' generated before e of
x[e'] · weight[e'] — one shared weight matrix and an exclusive cumulative sum along the ordering,
O(D·H) for all D conditionals. The result is element-major (unit e·H + h).
`element_scale`: each element's H units multiplied by that element's own scalar (RNADE's
per-dimension activation rescaling, Uria et al. 2013).
`element_linear`: each element's own linear read-out of its H units, laid out parameter-major
(unit p·D + e), as dense distribution parameters are.
Cached generation carries the prefix sum along the order (the primitives' `scan_role`)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from arspec.domains import Deps
from arspec.primitives.base import Param, Primitive
from arspec.types import TensorType


@dataclass(eq=False)
class OrderedPrefixLinear(Primitive):
    kind = "ordered_prefix_linear"
    mask_sets = True
    scan_role = "prefix"

    orders: np.ndarray            # (M, D): the step of each element, per mask set
    hidden: int

    @property
    def elements(self) -> int:
        return int(self.orders.shape[1])

    def out_type(self, args: Sequence[TensorType]) -> TensorType:
        return TensorType(self.elements * self.hidden, ())

    def params(self) -> dict[str, Param]:
        d = self.elements
        return {"weight": Param((d, self.hidden), "normal", 1.0 / d ** 0.5), "bias": Param((self.hidden,), "zeros")}

    def buffers(self) -> dict[str, np.ndarray]:
        """Per mask set, the elements in generation order."""
        return {"perms": np.argsort(self.orders, axis=1, kind="stable").astype(np.int64)}

    def footprint(self, args: Sequence[Deps], out: TensorType, mask: int) -> Deps:
        order = self.orders[mask % len(self.orders)]
        earlier = order[None, :] < order[:, None]                       # (D, D)
        per_element = args[0].dense(earlier)
        return per_element.select(np.repeat(np.arange(self.elements), self.hidden))


@dataclass(eq=False)
class ElementScale(Primitive):
    kind = "element_scale"
    scan_role = "element"
    per_element = True            # in a scan, the kernel also takes the element being generated

    elements: int
    hidden: int

    def out_type(self, args: Sequence[TensorType]) -> TensorType:
        return args[0]

    def params(self) -> dict[str, Param]:
        return {"scale": Param((self.elements,), "ones")}

    def footprint(self, args: Sequence[Deps], out: TensorType, mask: int) -> Deps:
        return args[0]

    def probe(self, name: str, rng: np.random.Generator) -> np.ndarray | None:
        """Positive scales: a negative one would turn the positive probe biases' open ReLUs off."""
        return 0.5 + rng.random(self.elements)


@dataclass(eq=False)
class ElementLinear(Primitive):
    kind = "element_linear"
    scan_role = "emit"

    elements: int
    hidden: int
    outputs: int                  # parameters per element

    def out_type(self, args: Sequence[TensorType]) -> TensorType:
        return TensorType(self.outputs * self.elements, ())

    def params(self) -> dict[str, Param]:
        return {"weight": Param((self.outputs, self.elements, self.hidden), "normal", 1.0 / self.hidden ** 0.5),
                "bias": Param((self.outputs, self.elements), "zeros")}

    def footprint(self, args: Sequence[Deps], out: TensorType, mask: int) -> Deps:
        units = np.arange(self.elements) * self.hidden
        acc = args[0].select(units)
        for h in range(1, self.hidden):
            acc = acc.union(args[0].select(units + h))
        return acc.select(np.tile(np.arange(self.elements), self.outputs))
