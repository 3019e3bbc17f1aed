"""What `arspec verify` proves of a recorded module: for every element of the event, the latest
element it reads (the autoregressive property, exactly, in one replay); whether an item's output
reads another item (batch coupling); and, for chosen elements, every element they read (their
dependency field: blind spots and pictures)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils._pytree import tree_flatten

from arspec.resources import memory_budget
from arspec.verification.pattern import OutputPattern, to_elements
from arspec.verification.replay import Replay
from arspec.verification.semiring import LinearSemiring, MaxSemiring, Semiring
from arspec.verification.tape import Ref, Tape


@dataclass
class Layout:
    """How the output is read: its pattern, the event's axis names and sizes, each element's step."""

    pattern: OutputPattern
    axes: tuple[str, ...]
    shape: tuple[int, ...]
    steps: np.ndarray

    @property
    def sizes(self) -> dict[str, int]:
        return dict(zip(self.axes, self.shape))


@dataclass
class ModeResult:
    """One mode's findings (eval or train)."""

    mode: str
    latest: np.ndarray                      # per element of item 0: the latest step it reads (-inf: none)
    leaking: np.ndarray                     # per element: reads an element of its own step or later
    coupled: list[str] = field(default_factory=list)
    unknown: dict[str, str] = field(default_factory=dict)
    escapes: list[str] = field(default_factory=list)

    @property
    def leaks(self) -> int:
        return int(self.leaking.sum())


class OutputError(ValueError):
    """The module's output cannot be read with the pattern given."""


def output_ref(tape: Tape) -> Ref:
    """The tensor the pattern names: the output, or the first tensor of a tuple, list or dict."""
    leaves = [r for r in tree_flatten(tape.output)[0] if isinstance(r, Ref)]
    if not leaves:
        raise OutputError("the module returned no tensor")
    return leaves[0]


def _elements(layout: Layout, shadow: torch.Tensor, semiring: Semiring) -> torch.Tensor:
    def reduce(t: torch.Tensor, dim: int) -> torch.Tensor:
        return semiring.reduce(t, (dim,))
    try:
        return to_elements(shadow, layout.pattern, layout.sizes, layout.axes, reduce)
    except (ValueError, RuntimeError) as err:
        raise OutputError(f"--output {layout.pattern.text!r}: {err}") from None


def latest_read(tape: Tape, layout: Layout, labels: torch.Tensor) -> tuple[torch.Tensor, Replay]:
    """Replay in the max semiring with `labels` on the input elements: per output element, the
    largest label it reads."""
    replay = Replay(tape, MaxSemiring, labels)
    result = replay.run()
    leaves = [s for s in tree_flatten(result)[0] if hasattr(s, "dep")]
    out = leaves[0] if isinstance(result, (list, tuple, dict)) else result
    return _elements(layout, out.dep, MaxSemiring), replay


def check_mode(mode: str, tape: Tape, layout: Layout, batch: int) -> ModeResult:
    """The autoregressive check and the batch coupling of one recorded pass."""
    steps = torch.as_tensor(layout.steps, dtype=torch.float64)
    labels = steps.expand(batch, *layout.shape)
    latest, replay = latest_read(tape, layout, labels)
    latest0 = latest.detach().numpy()
    leaking = np.asarray((latest0 >= layout.steps[None]).any(axis=0))
    result = ModeResult(mode, latest0[0], leaking, unknown=dict(replay.unknown), escapes=list(tape.escapes))
    if batch > 1:
        item = torch.arange(batch, dtype=torch.float64).reshape(batch, *([1] * len(layout.shape))).expand(batch, *layout.shape)
        for labels_, reader in ((item, 0), (batch - 1 - item, batch - 1)):
            seen, _ = latest_read(tape, layout, labels_)
            own = float(labels_[reader].flatten()[0])
            reads = seen[reader].detach().numpy()
            if (reads > own).any():
                other = "a later item" if reader == 0 else "an earlier item"
                index = np.unravel_index(int(np.argmax(reads > own)), layout.shape)
                result.coupled.append(f"item {reader}'s element {tuple(int(i) for i in index)} reads {other} of the batch")
    return result


FIELD_ROWS = 64             # at most this many fields per batched backward pass
PASS_ELEMENTS = 1 << 20     # rows per pass while their values stay this small (batching pays off below)
BACKWARD_FACTOR = 6         # bytes per row of a batched backward, in float64 values of the pass's peak live set


def field_rows(tape: Tape, batch: int, budget: int) -> int:
    """How many fields one batched backward computes. Batching saves a small model the cost of a
    call per field (MADE over 784 bits: 0.09 s for 64 fields in one pass, 0.38 s one by one), but
    a large one runs slower batched (a 500-step WaveNet: 9.6 s at 4 rows a pass, 12.8 s at 64)
    and a row holds a float64 gradient of the pass's values (measured: up to 4.3 times its peak
    live set; sized at 6 times it, within `budget` bytes)."""
    per_item = max(1, tape.peak_data_elements() // max(1, batch))
    return max(1, min(FIELD_ROWS, PASS_ELEMENTS // per_item, budget // (BACKWARD_FACTOR * 8 * per_item)))


def fields(tape: Tape, layout: Layout, batch: int, elements: list[tuple[int, ...]], budget: int | None = None) -> np.ndarray:
    """The dependency field of each of `elements` (of item 0): (len(elements), *event) booleans,
    from one replay in the linear semiring and batched backward passes, as many rows a pass as
    `budget` bytes allow (default: `arspec.resources.memory_budget()`)."""
    if not elements:
        return np.zeros((0, *layout.shape), dtype=bool)
    weights = torch.ones(batch, *layout.shape, dtype=torch.float64, requires_grad=True)
    replay = Replay(tape, LinearSemiring, weights)
    with torch.enable_grad():
        result = replay.run()
        leaves = [s for s in tree_flatten(result)[0] if hasattr(s, "dep")]
        out = _elements(layout, leaves[0].dep, LinearSemiring)
        picked = torch.stack([out[(0, *e)] for e in elements])
        if not picked.requires_grad:
            return np.zeros((len(elements), *layout.shape), dtype=bool)
        grads = []
        rows = field_rows(tape, batch, budget if budget is not None else memory_budget())
        for start in range(0, len(elements), rows):
            chunk = picked[start:start + rows]
            eye = torch.eye(len(chunk), dtype=torch.float64)
            try:
                (g,) = torch.autograd.grad(chunk, weights, eye, retain_graph=True, is_grads_batched=True, allow_unused=True)
            except RuntimeError:
                g = torch.stack([torch.autograd.grad(c, weights, retain_graph=True, allow_unused=True)[0] for c in chunk])
            grads.append(torch.zeros(len(chunk), *layout.shape, dtype=torch.bool) if g is None else g[:, 0] > 0)
    return torch.cat(grads).numpy()


@dataclass
class BlindSpots:
    """Earlier elements inside the bounding box of an element's field that it does not read."""

    looked_at: int                          # elements whose fields were examined
    of: int                                 # elements in the event
    affected: int                           # of those, how many have a blind spot
    example: tuple[tuple[int, ...], int] | None = None     # an affected element and how many it misses


def blind_spots(layout: Layout, elements: list[tuple[int, ...]], found: np.ndarray) -> BlindSpots:
    steps = layout.steps
    affected, example = 0, None
    for e, f in zip(elements, found):
        marked = f.copy()
        marked[e] = True
        box = tuple(slice(int(np.nonzero(marked.any(axis=tuple(a for a in range(marked.ndim) if a != d)))[0].min()),
                          int(np.nonzero(marked.any(axis=tuple(a for a in range(marked.ndim) if a != d)))[0].max()) + 1)
                    for d in range(marked.ndim))
        missed = int(((steps[box] < steps[e]) & ~f[box]).sum())
        if missed:
            affected += 1
            if example is None or missed > example[1]:
                example = (e, missed)
    return BlindSpots(len(elements), int(math.prod(layout.shape)), affected, example)


def sample_elements(layout: Layout, count: int) -> list[tuple[int, ...]]:
    """`count` elements spread evenly over the generation order (all of them for small events)."""
    order = np.argsort(layout.steps.reshape(-1), kind="stable")
    if len(order) > count:
        order = order[np.linspace(0, len(order) - 1, count).round().astype(int)]
    return [tuple(int(i) for i in np.unravel_index(int(k), layout.shape)) for k in order]
