"""lstm_scan — the spatial LSTM recurrences of PixelRNN (van den Oord et al. 2016a).

The argument holds the input-to-state pre-activations (4·hidden channels, gate chunks [o, f, i, g]).
`rows` (Row LSTM): one step per row; the state of row i reads the previous row's state through a
width-k convolution. `diagonal` (Diagonal LSTM): the map is skewed so that each diagonal is a
column; one step per column, the state at row r reading rows r-1 and r of the previous column
(a 2x1 convolution). `mirror` flips the width first (the right-to-left direction)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from arspec.domains import Deps
from arspec.primitives.base import Param, Primitive
from arspec.types import TensorType


def open_gates_bias(hidden: int) -> np.ndarray:
    """Gate biases [o, f, i, g] for the dynamic check: input and output gates open, the forget gate
    half open, so a perturbation survives many recurrent steps."""
    bias = np.zeros(4 * hidden)
    bias[:hidden] = 4.0
    bias[2 * hidden:3 * hidden] = 4.0
    return bias


@dataclass(eq=False)
class LstmScan(Primitive):
    kind = "lstm_scan"

    hidden: int
    mode: Literal["rows", "diagonal"]
    kernel: int                    # width of the state-to-state convolution (2 for diagonal)
    mirror: bool
    groups: int                    # data channel groups: channel j of a gate chunk serves group j mod G

    def out_type(self, args: Sequence[TensorType]) -> TensorType:
        return TensorType(self.hidden, args[0].spatial)

    def state_offsets(self) -> list[tuple[int, int]]:
        """The state positions (relative) that the state at a position reads directly."""
        if self.mode == "rows":
            half = self.kernel // 2
            return [(-1, dx) for dx in range(-half, half + 1)]
        return [(0, 1 if self.mirror else -1), (-1, 0)]

    def params(self) -> dict[str, Param]:
        h = self.hidden
        bound = 1.0 / (h * self.kernel) ** 0.5
        return {"gate_bias": Param((4 * h,), "zeros"),
                "state_weight": Param((4 * h, h, self.kernel), "uniform", bound),
                "state_bias": Param((4 * h,), "uniform", bound)}

    def attrs(self) -> dict[str, Any]:
        return {"mode": self.mode, "mirror": self.mirror}

    def footprint(self, args: Sequence[Deps], out: TensorType, mask: int) -> Deps:
        return args[0].closure(self.state_offsets(), self.groups, out.channels, out.spatial)

    def probe(self, name: str, rng: np.random.Generator) -> np.ndarray | None:
        """Input and output gates open, forget gate half open, and a state-to-state map of gain
        about one, so a perturbation still shows after a whole image of recurrent steps."""
        h = self.hidden
        if name == "gate_bias":
            return open_gates_bias(h)
        if name == "state_weight":
            return rng.standard_normal((4 * h, h, self.kernel)) * (2.0 / (h * self.kernel)) ** 0.5
        if name == "state_bias":
            return np.zeros(4 * h)
        return None


@dataclass(eq=False)
class ConvLstm(Primitive):
    """A convolutional LSTM over time (Shi et al. 2015), the leading spatial axis of a video: the
    argument holds the input-to-state pre-activations (4·hidden channels, chunks [o, f, i, g]) of
    every frame; the state of frame t reads its own pre-activations and the state of frame t-1
    through a k×k convolution. So the state at (t, y, x) reads frames ≤ t only, its spatial reach
    growing by k//2 per frame — the closure of those taps, exact at the borders."""

    kind = "conv_lstm"

    hidden: int
    kernel: int                    # odd size of the state-to-state convolution

    def out_type(self, args: Sequence[TensorType]) -> TensorType:
        return TensorType(self.hidden, args[0].spatial)

    def state_offsets(self) -> list[tuple[int, int, int]]:
        """The state positions (relative) that the state at a position reads directly."""
        half = self.kernel // 2
        return [(-1, dy, dx) for dy in range(-half, half + 1) for dx in range(-half, half + 1)]

    def params(self) -> dict[str, Param]:
        h, k = self.hidden, self.kernel
        bound = 1.0 / (h * k * k) ** 0.5
        return {"gate_bias": Param((4 * h,), "zeros"), "state_weight": Param((4 * h, h, k, k), "uniform", bound)}

    def footprint(self, args: Sequence[Deps], out: TensorType, mask: int) -> Deps:
        return args[0].closure(self.state_offsets(), 1, out.channels, out.spatial)

    def probe(self, name: str, rng: np.random.Generator) -> np.ndarray | None:
        """Input and output gates open, the forget gate half open and a state-to-state map of gain
        about one, so a perturbation of the first frame still shows in the last."""
        h, k = self.hidden, self.kernel
        if name == "gate_bias":
            return open_gates_bias(h)
        if name == "state_weight":
            return rng.standard_normal((4 * h, h, k, k)) * (2.0 / (h * k * k)) ** 0.5
        return None
