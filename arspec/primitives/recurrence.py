"""The recurrent LSTM cells of PixelRNN (van den Oord et al. 2016a) and the Video Pixel Network,
each declared by its step, so its footprint, its whole-tensor kernel and every cached-generation
engine follow from the one declaration.

row_lstm — the Row LSTM: the state of row i reads the row above through a width-k convolution.
diagonal_lstm — the Diagonal LSTM: the state at (i, j) reads (i, j-1) and (i-1, j), what the
skewed map's 2x1 convolution over the previous column reads; mirrored, (i, j+1) and (i-1, j).
conv_lstm — the convolutional LSTM over a video's frames."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from arspec.primitives.base import Param
from arspec.primitives.step import DeclaredPrimitive, StepBuilder


def open_gates_bias(hidden: int) -> np.ndarray:
    """Gate biases [o, f, i, g] for the dynamic check: input and output gates open, the forget gate
    half open, so a perturbation survives many recurrent steps."""
    bias = np.zeros(4 * hidden)
    bias[:hidden] = 4.0
    bias[2 * hidden:3 * hidden] = 4.0
    return bias


@dataclass(eq=False)
class LstmCell(DeclaredPrimitive):
    """A recurrent LSTM cell declared by its step: the argument holds its input-to-state
    pre-activations (4 hidden channels, chunks [o, f, i, g]), its value is the state [h, c] it
    carries (the op passes h on). A subclass says where its state is read (`rank`, `step`)."""

    hidden: int

    @property
    def out_channels(self) -> int:
        return 2 * self.hidden

    @property
    def in_channels(self) -> tuple[int, ...]:
        return (4 * self.hidden,)

    def update(self, b: StepBuilder, gates: int, c_before: int) -> int:
        """c = sigmoid(f) c_before + sigmoid(i) tanh(g), h = sigmoid(o) tanh(c): the state [h, c]."""
        h = self.hidden
        o, f, i, g = (b.slice(gates, k * h, (k + 1) * h) for k in range(4))
        c = b.add(b.mul(b.act("sigmoid", f), c_before), b.mul(b.act("sigmoid", i), b.act("tanh", g)))
        return b.concat(b.mul(b.act("sigmoid", o), b.act("tanh", c)), c)

    def probe(self, name: str, rng: np.random.Generator) -> np.ndarray | None:
        """Input and output gates open, the forget gate half open and a state-to-state map of gain
        about one, so a perturbation still shows after a whole image (or video) of steps."""
        shape = self.params()[name].shape
        if name == "gate_bias":
            return open_gates_bias(self.hidden)
        if name == "state_weight":
            return rng.standard_normal(shape) * (2.0 / int(np.prod(shape[1:]))) ** 0.5
        if name == "state_bias":
            return np.zeros(shape)
        return None


def _state_params(hidden: int, kernel: int) -> dict[str, Param]:
    """The gate bias and a state-to-state map of `kernel` taps with its bias (uniform init)."""
    bound = 1.0 / (hidden * kernel) ** 0.5
    return {"gate_bias": Param((4 * hidden,), "zeros"),
            "state_weight": Param((4 * hidden, hidden, kernel), "uniform", bound),
            "state_bias": Param((4 * hidden,), "uniform", bound)}


@dataclass(eq=False)
class RowLstm(LstmCell):
    """The Row LSTM cell at pixel (i, j), its value the state [h, c] it carries (the op passes h on):

        [o, f, i, g] = pre(i, j) + gate_bias + W * h(i-1, j-k//2 .. j+k//2) + state_bias [row i > 0]
        c(i, j) = sigmoid(f) c(i-1, j) + sigmoid(i) tanh(g),   h(i, j) = sigmoid(o) tanh(c(i, j))

    with zeros above the first row, where the state-to-state term and its bias are absent. The argument holds the input-to-state
    pre-activations (4 hidden channels); with channel groups, unit u serves group u mod G."""

    kind = "row_lstm"

    kernel: int                    # odd width of the state-to-state convolution over the row above
    groups: int = 1

    @property
    def rank(self) -> int:
        return 2

    def params(self) -> dict[str, Param]:
        return _state_params(self.hidden, self.kernel)

    def step(self, b: StepBuilder) -> int:
        h, half = self.hidden, self.kernel // 2
        above = [b.state((-1, dx)) for dx in range(-half, half + 1)]
        recurrent = b.product([b.slice(state, 0, h) for state in above], "state_weight", 4 * h, taps=range(self.kernel))
        gates = b.add(b.read(0, (0, 0)), b.product([b.inside((0, 0))], "gate_bias", 4 * h), recurrent,
                      b.product([b.inside((-1, 0))], "state_bias", 4 * h))
        return self.update(b, gates, b.slice(above[half], h, 2 * h))


@dataclass(eq=False)
class DiagonalLstm(LstmCell):
    """The Diagonal LSTM cell at pixel (i, j), its value the state [h, c] it carries (the op passes
    h on); `mirror` runs the rows right to left (s = +1, else s = -1):

        [o, f, i, g] = pre(i, j) + gate_bias + W0 h(i-1, j) + W1 h(i, j+s) + state_bias
        c(i, j) = sigmoid(f) c(i, j+s) + sigmoid(i) tanh(g),   h(i, j) = sigmoid(o) tanh(c(i, j))

    with zero state outside the image: PixelRNN's 2x1 convolution over the previous column of the
    skewed map, unskewed. Its context is the quadrant up and to the left (mirrored: up and to the
    right, the current row included, so the op's output must move down a row). The argument holds
    the input-to-state pre-activations (4 hidden channels); with channel groups, unit u serves
    group u mod G."""

    kind = "diagonal_lstm"

    mirror: bool = False
    groups: int = 1

    @property
    def rank(self) -> int:
        return 2

    def params(self) -> dict[str, Param]:
        return _state_params(self.hidden, 2)

    def step(self, b: StepBuilder) -> int:
        h = self.hidden
        above, beside = b.state((-1, 0)), b.state((0, 1 if self.mirror else -1))
        recurrent = b.product([b.slice(above, 0, h), b.slice(beside, 0, h)], "state_weight", 4 * h, taps=range(2))
        here = b.inside((0, 0))
        gates = b.add(b.read(0, (0, 0)), b.product([here], "gate_bias", 4 * h), recurrent, b.product([here], "state_bias", 4 * h))
        return self.update(b, gates, b.slice(beside, h, 2 * h))


@dataclass(eq=False)
class ConvLstm(LstmCell):
    """A convolutional LSTM over time (Shi et al. 2015), the leading spatial axis of a video: the
    argument holds the input-to-state pre-activations (4·hidden channels, chunks [o, f, i, g]) of
    every frame; the state of frame t reads its own pre-activations and the state of frame t-1
    through a k×k convolution. Declared by its step at (t, y, x), its value the state [h, c] it
    carries (the op passes h on):

        [o, f, i, g] = pre(t, y, x) + gate_bias + W * h(t-1, y-k//2 .. y+k//2, x-k//2 .. x+k//2)
        c = sigmoid(f) c(t-1, y, x) + sigmoid(i) tanh(g),   h = sigmoid(o) tanh(c)

    with zeros before the first frame and outside it. So the state at (t, y, x) reads frames ≤ t
    only, its spatial reach growing by k//2 per frame."""

    kind = "conv_lstm"

    kernel: int                    # odd size of the state-to-state convolution

    @property
    def rank(self) -> int:
        return 3

    def params(self) -> dict[str, Param]:
        h, k = self.hidden, self.kernel
        bound = 1.0 / (h * k * k) ** 0.5
        return {"gate_bias": Param((4 * h,), "zeros"), "state_weight": Param((4 * h, h, k, k), "uniform", bound)}

    def step(self, b: StepBuilder) -> int:
        h, k, half = self.hidden, self.kernel, self.kernel // 2
        before = [b.state((-1, dy - half, dx - half)) for dy in range(k) for dx in range(k)]     # the kernel's taps, row-major
        recurrent = b.product([b.slice(state, 0, h) for state in before], "state_weight", 4 * h, taps=range(k * k))
        gates = b.add(b.read(0, (0, 0, 0)), b.product([b.inside((0, 0, 0))], "gate_bias", 4 * h), recurrent)
        return self.update(b, gates, b.slice(before[half * k + half], h, 2 * h))
