"""spatial_lstm — a two-dimensional LSTM over an image in raster order (Theis & Bethge 2015).

At pixel (i, j) the cell reads its input taps (a causal neighbourhood of the input) and its own
state at (i, j-1) and (i-1, j):

    [i, f_left, f_up, o, g] = W [inputs; h(i, j-1); h(i-1, j)] + b
    c(i, j) = sigmoid(f_left) c(i, j-1) + sigmoid(f_up) c(i-1, j) + sigmoid(i) tanh(g)
    h(i, j) = sigmoid(o) tanh(c(i, j))

with zeros outside the image. The primitive's value is [h, c] (the state it carries); the op
passes h on. With channel groups (R -> G -> B), unit u serves group u mod G and reads, at its own
pixel, only the input channels its mask allows (A: earlier groups; B: earlier and its own): a
mask on the gates' product, whose connectivity the footprint follows. Declared once, as the step
above: its footprint, kernel and cached step follow."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from arspec.primitives import Param
from arspec.primitives.step import DeclaredPrimitive, StepBuilder

LEFT, UP = (0, -1), (-1, 0)


@dataclass(eq=False)
class SpatialLstm(DeclaredPrimitive):
    kind = "spatial_lstm"

    hidden: int
    inputs: int                                  # channels of the input
    offsets: tuple[tuple[int, int], ...]         # the input taps (the causal neighbourhood)
    groups: int = 1                              # channel groups ordered within a pixel (R -> G -> B)
    mask: str = "B"                              # at the pixel itself: A earlier groups, B also its own

    @property
    def out_channels(self) -> int:
        return 2 * self.hidden

    @property
    def in_channels(self) -> tuple[int, ...]:
        return (self.inputs,)

    @property
    def rank(self) -> int:
        return 2

    def buffers(self) -> dict[str, np.ndarray]:
        """The gates' connectivity (5H rows, the taps' channels then h left and h above): every
        input channel at other pixels and the state; at the pixel itself, by channel group."""
        if self.groups == 1:
            return {}
        h = self.hidden
        rows = np.tile(np.arange(h) % self.groups, 5)
        conn = np.ones((5 * h, self.inputs * len(self.offsets) + 2 * h), dtype=bool)
        if (0, 0) in self.offsets:
            k = self.offsets.index((0, 0))
            cols = np.arange(self.inputs) % self.groups
            allowed = cols[None, :] < rows[:, None] if self.mask == "A" else cols[None, :] <= rows[:, None]
            conn[:, k * self.inputs:(k + 1) * self.inputs] = allowed
        return {"mask": conn}

    def params(self) -> dict[str, Param]:
        h, fan_in = self.hidden, self.inputs * len(self.offsets) + 2 * self.hidden
        return {"weight": Param((5 * h, fan_in), "uniform", 1.0 / fan_in ** 0.5), "bias": Param((5 * h,), "zeros")}

    def step(self, b: StepBuilder) -> int:
        h = self.hidden
        taps = [b.read(0, offset) for offset in self.offsets]
        left, up = b.state(LEFT), b.state(UP)
        gates = b.product([*taps, b.slice(left, 0, h), b.slice(up, 0, h)], "weight", 5 * h, bias="bias",
                          mask="mask" if self.groups > 1 else "")
        i, f_left, f_up, o = (b.act("sigmoid", b.slice(gates, k * h, (k + 1) * h)) for k in range(4))
        g = b.act("tanh", b.slice(gates, 4 * h, 5 * h))
        c = b.add(b.mul(f_left, b.slice(left, h, 2 * h)), b.mul(f_up, b.slice(up, h, 2 * h)), b.mul(i, g))
        return b.concat(b.mul(o, b.act("tanh", c)), c)

    def probe(self, name: str, rng: np.random.Generator) -> np.ndarray | None:
        """Gates open (input, forget, output biases positive) so a perturbation survives a whole
        image of recurrent steps in the dynamic check."""
        if name == "bias":
            bias = np.zeros(5 * self.hidden)
            bias[: 4 * self.hidden] = 2.0
            return bias
        return None


def neighbourhood(window: int, center: bool) -> tuple[tuple[int, int], ...]:
    """The causal neighbourhood of a pixel: `window` rows above (columns within +-window), the
    `window` pixels to its left, and the pixel itself when `center`."""
    above = [(di, dj) for di in range(-window, 0) for dj in range(-window, window + 1)]
    left = [(0, dj) for dj in range(-window, 0)]
    return tuple(above + left + ([(0, 0)] if center else []))
