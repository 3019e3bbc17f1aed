"""masked_dense — MADE's masked fully connected layer, its mask built from unit degrees
(Germain et al. 2015): output unit f reads input unit u when deg_out[f] >= deg_in[u] (hidden
layers) or deg_out[f] > deg_in[u] (`strict`: the output layer and direct connections).
Several mask sets (connectivity-agnostic training) are rows of the degree arrays."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from arspec.domains import Deps
from arspec.primitives.base import Param, Primitive
from arspec.types import TensorType


def degree_mask(out_degrees: np.ndarray, in_degrees: np.ndarray, strict: bool) -> np.ndarray:
    """(F, U) connectivity of one mask set from its degrees."""
    return out_degrees[:, None] > in_degrees[None, :] if strict else out_degrees[:, None] >= in_degrees[None, :]


@dataclass(eq=False)
class MaskedDense(Primitive):
    """out = (weight * masks[active]) @ flatten(in) + bias."""

    kind = "masked_dense"
    mask_sets = True

    in_degrees: np.ndarray       # (M, U)
    out_degrees: np.ndarray      # (M, F)
    strict: bool
    bias: bool = True

    @property
    def features(self) -> int:
        return int(self.out_degrees.shape[1])

    def mask(self, m: int) -> np.ndarray:
        m = m % self.in_degrees.shape[0]
        return degree_mask(self.out_degrees[m], self.in_degrees[m], self.strict)

    def out_type(self, args: Sequence[TensorType]) -> TensorType:
        return TensorType(self.features, ())

    def params(self) -> dict[str, Param]:
        units = int(self.in_degrees.shape[1])
        out = {"weight": Param((self.features, units), "normal", 1.0 / max(1, units) ** 0.5)}
        if self.bias:
            out["bias"] = Param((self.features,), "zeros")
        return out

    def buffers(self) -> dict[str, np.ndarray]:
        """The masks of every mask set, (M, F, U), built once from the degrees."""
        return {"masks": np.stack([self.mask(m) for m in range(self.in_degrees.shape[0])])}

    def footprint(self, args: Sequence[Deps], out: TensorType, mask: int) -> Deps:
        return args[0].dense(self.mask(mask))


@dataclass(eq=False)
class Flatten(Primitive):
    """A tensor (C, *S) as one vector of C·prod(S) units in C order: the layout of dense
    distribution parameters (unit p·D + e), so a convolutional head can join a dense one."""

    kind = "flatten"

    def out_type(self, args: Sequence[TensorType]) -> TensorType:
        return TensorType(args[0].numel, ())

    def footprint(self, args: Sequence[Deps], out: TensorType, mask: int) -> Deps:
        return args[0].flatten()
