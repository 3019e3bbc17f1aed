"""A per-step plan for cached generation on the CPU, compiled once per model: generated
straight-line numpy code for one generation step, ring buffers instead of full-size buffers.
Imports nothing from arspec: generated standalone files carry a copy.

In a raster-ordered, position-local model every call's value at position p becomes final a fixed
number of positions after p (its *lag*, a max-plus over the live taps in flat raster offsets).
Computing each call at position q - lag at step q is therefore valid everywhere — at the borders
it is never earlier than needed — and every step runs the same calls, once each. A value read
only at the same position in the same step stays a local variable; one read later, or at another
position, lives in a ring buffer just long enough for its last reader. The step function is
generated once as numpy code (per-op overhead is a fraction of a torch dispatch at these sizes);
sampling itself stays in torch, with the same uniforms in the same order as the naive loop.

Values are channel-major, (C, B) per position: a gate's halves, a ring slot, a block of stacked
inputs are then contiguous, and numpy's elementwise calls on them cost half of what they cost on
the strided columns of (B, C) (measured at batch 16: 14 against 25 us per WaveNet layer)."""
from __future__ import annotations

import contextlib
import functools
from typing import Any

import numpy as np
import torch

from arspec_torch.keyhistory import KeyHistory, attend_rows, history_of

try:
    from scipy.special import expit
except ImportError:  # pragma: no cover - scipy is optional for generated files
    def expit(x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-x))


def gemv_for(dtype: np.dtype) -> Any:
    """BLAS's matrix-vector product with the bias added in the same call (y = A x + b), for a
    batch of one, where the separate bias addition costs as much as the product; None without
    scipy (the product and the addition are then two numpy calls)."""
    try:
        from scipy.linalg.blas import get_blas_funcs
    except ImportError:  # pragma: no cover - scipy is optional for generated files
        return None
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        return None
    return get_blas_funcs("gemv", dtype=dtype)

_POINTWISE = {"relu": "np.maximum({0}, 0)", "tanh": "np.tanh({0})", "sigmoid": "expit({0})", "identity": "{0}",
              "elu": "np.where({0} > 0, {0}, np.expm1({0}))"}
_KINDS = {"context_projection"}     # computed once as a constant (its context), never in a step; the rest lower their step


def _steps_here(call: Any) -> bool:
    """Whether the numpy step has code for a call: its declared step (arspec.primitives.step), or
    a rule of its kind's."""
    return call.step is not None or call.kind in _KINDS


def single_threaded_blas() -> Any:
    """numpy's small matrix products on one thread: BLAS worker threads spinning between steps
    slow both numpy and torch (measured here: 3x at batch 16, nothing gained at batch 1)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is optional for generated files
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


class StepPlan:
    """The schedule, ring sizes and index tables of one model at one event shape."""

    def __init__(self, calls: list[Any], output: str, internal: tuple[int, ...], frame_values: frozenset[str] = frozenset(),
                 histories: dict[str, KeyHistory | None] | None = None) -> None:
        self.groups, self.spatial = internal[0], tuple(internal[1:])
        self.positions = int(np.prod(self.spatial))
        self.strides = [int(np.prod(self.spatial[i + 1:])) for i in range(len(self.spatial))]
        self.output = output
        self.calls = {c.id: c for c in calls}
        self._histories: dict[str, KeyHistory | None] = dict(histories or {})     # the window cache's, when it made them
        # values of a video that read only earlier frames (the recurrence over frames): computed a
        # frame at a time in torch, just before the frame starts, and read like constants
        self.frame_values = set(frame_values)
        self.frame = int(np.prod(self.spatial[1:])) if self.frame_values else self.positions
        data = data_dependent(calls)
        #: calls that read their own state ahead in raster order along the row (a mirrored Diagonal
        #: LSTM): computed a whole row at a time, right to left, at the step the row's inputs are
        #: final; by call, the lag of that step (the row's last position), see `_lags`
        self.burst_lag: dict[str, int] = {}
        self.lag = self._lags(calls)
        needed = self._reach({output}, stop=self.frame_values)          # what the output reads per position
        self.frame_values &= needed                                       # those the step reads
        per_position = [c for c in calls if c.id in needed and c.id not in self.frame_values]
        self.steps = [c for c in per_position if self.lag.get(c.id) is not None]
        self.opaque = [c.id for c in per_position if c.taps is None and data[c.id] and not self._history_covers(c)]   # no step rule
        frame_set = self._reach(self.frame_values)
        self.frame_calls = [c for c in calls if data[c.id] and c.id in frame_set]
        self.constants = [c for c in calls if self.lag.get(c.id) is None and c.id not in self.opaque
                          and not (data[c.id] and c.id in frame_set)]                # never read the data
        self.reads = self._reads()
        self.ring = self._rings()
        self.first = min([self.lag[c.id] for c in self.steps] or [0])  # type: ignore[type-var]
        self.redo = self._computed_with_output()
        self._slots: dict[tuple[str, int], np.ndarray] = {}

    @property
    def unusable_because(self) -> str:
        """Why the plan cannot run this model ('' when it can)."""
        if self.opaque:
            return f"{self.calls[self.opaque[0]].kind} reads positions the plan cannot follow"
        kinds = sorted({c.kind for c in self.steps if not _steps_here(c)})
        if kinds:
            return f"the step plan has no instructions for {', '.join(kinds)}"
        ahead = next((c for c in self.steps if any(self._flat(off) > 0 for off in state_offsets_of(c)) and not self._row_burst(c)), None)
        if ahead is not None:
            return f"{ahead.kind} reads its own state ahead in raster order other than along its row"
        if self.burst_lag and self.groups > 1:
            return f"{self.calls[next(iter(self.burst_lag))].kind} is computed a row at a time, which the plan does not do with channel groups"
        lag = self.lag.get(self.output)
        if lag is None or lag > 0:
            return "a position's parameters are not final before its element is drawn (a reach that wraps past a row)"
        return ""

    @property
    def usable(self) -> bool:
        """Every call that reads the data has a step rule, and a position's parameters are final
        before its element is drawn (with few columns, a vertical stack's reach can wrap past the
        end of a row; such models use the torch path)."""
        return not self.unusable_because

    def _row_burst(self, call: Any) -> bool:
        """Whether a call's state reads point earlier when the rows run down and each row right to
        left (to the right on its row, or on rows above): its rows can be computed whole."""
        offsets = state_offsets_of(call)
        return (len(self.spatial) == 2 and any(self._flat(off) > 0 for off in offsets)
                and all(off[0] < 0 or (off[0] == 0 and off[1] > 0) for off in offsets))

    @property
    def width(self) -> int:
        """Positions per row (the last spatial axis)."""
        return self.spatial[-1]

    def channels(self, value: str) -> int:
        """Channels of a value: the data's channel groups, or the call's output channels."""
        return self.groups if value in DATA_VALUES else self.calls[value].channels

    def ring_bytes(self, batch: int, itemsize: int) -> int:
        """Memory of the ring buffers for a batch (what the cache holds while sampling)."""
        return sum((size + 1) * self.channels(v) * batch * itemsize for v, size in self.ring.items())

    def _flat(self, offset: tuple[int, ...]) -> int:
        return sum(o * s for o, s in zip(offset, self.strides))

    def _live(self, call: Any, i: int) -> list[tuple[int, ...]]:
        """The offsets argument i is read at: the live taps, or for an attention (no fixed taps) the
        query's offset and, for its keys and values, the latest offset its pattern reads."""
        if call.taps is not None:
            return [off for off, used in zip(call.taps[i], call.live[i]) if used]
        if call.step is None:
            return []
        offsets = list(call.step.input_offsets(i))
        history = self.history(call)
        if history is not None and i in call.step.history_args and history.latest is not None:
            offsets.append((0,) * (len(self.spatial) - 1) + (history.latest,))   # a flat offset: only `_flat` reads it
        return offsets

    def history(self, call: Any) -> KeyHistory | None:
        """The key positions of a call's attention at every position (None: it has none)."""
        if call.id not in self._histories:
            self._histories[call.id] = history_of(call, self.groups, self.spatial)
        return self._histories[call.id]

    def _history_covers(self, call: Any) -> bool:
        """A call without fixed taps that the plan still follows: one attention over the history
        of its keys and values, every other read at fixed offsets."""
        return call.step is not None and self.history(call) is not None

    def _lags(self, calls: list[Any]) -> dict[str, int | None]:
        """Per value, the flat lag after which it is final (None: it never reads the data). A frame
        value is final before its position's frame starts: lag -1 is never too early."""
        lag: dict[str, int | None] = {"x": 0, "x_raw": 0}
        for c in calls:
            if c.id in self.frame_values:
                lag[c.id] = -1
                continue
            best = None
            for i, arg in enumerate(c.args):
                if lag.get(arg) is None:
                    continue
                for off in self._live(c, i):
                    value = lag[arg] + self._flat(off)           # type: ignore[operator]
                    best = value if best is None else max(best, value)
            if best is not None and self._row_burst(c):          # a row at once, when its last position's inputs are final:
                self.burst_lag[c.id] = best                      # position (i, j) is final W - 1 - j steps after its own lag
                best += self.width - 1
            lag[c.id] = best
        return lag

    def _reach(self, names: set[str], stop: set[str] | frozenset[str] = frozenset()) -> set[str]:
        """The calls `names` read, transitively, themselves included; the arguments of those in
        `stop` are not followed."""
        out: set[str] = set()
        stack = list(names)
        while stack:
            name = stack.pop()
            if name in out or name not in self.calls:
                continue
            out.add(name)
            if name not in stop:
                stack.extend(self.calls[name].args)
        return out

    def _computed_with_output(self) -> set[str]:
        """The step calls the output at position q reads, transitively, through values that step q
        itself computes (an argument read at the offset that sets the reader's lag is computed in
        the same step). With channel groups, only these must run again after each channel of the
        position is drawn; every other value the output reads was final at an earlier step."""
        in_step = {c.id for c in self.steps}
        out: set[str] = set()
        stack = [self.output] if self.output in in_step else []
        while stack:
            name = stack.pop()
            if name in out:
                continue
            out.add(name)
            c = self.calls[name]
            for i, arg in enumerate(c.args):
                if arg in in_step and any(self.lag[arg] + self._flat(off) == self.lag[name] for off in self._live(c, i)):  # type: ignore[operator]
                    stack.append(arg)
        return out

    def _reads(self) -> dict[tuple[str, int], str]:
        """How each step call reads each argument: 'local', 'ring' or 'constant' (constants and
        frame values: whole arrays indexed by position)."""
        out = {}
        for c in self.steps:
            for i, arg in enumerate(c.args):
                if self.lag.get(arg) is None or arg in self.frame_values:
                    out[(c.id, i)] = "constant"
                elif c.step is not None and i in c.step.history_args:
                    out[(c.id, i)] = "ring"
                elif arg not in DATA_VALUES and arg not in self.burst_lag and all(off == (0,) * len(self.spatial) for off in self._live(c, i)) \
                        and self.lag[arg] == self.lag[c.id]:               # (a row computed at once is read from its ring)
                    out[(c.id, i)] = "local"
                else:
                    out[(c.id, i)] = "ring"
        return out

    def _rings(self) -> dict[str, int]:
        """Ring size of every value kept between steps: just long enough for its last reader."""
        ring: dict[str, int] = {"x": 1, "x_raw": 1, self.output: 1}
        for c in self.steps:
            for i, arg in enumerate(c.args):
                if self.reads[(c.id, i)] != "ring":
                    continue
                span = max([self.lag[c.id] - self._flat(off) - self.lag[arg] for off in self._live(c, i)] or [0])  # type: ignore[operator]
                if c.step is not None and i in c.step.history_args:
                    span = max(span, self.positions - 1)        # every position in its own slot: slot = position
                ring[arg] = max(ring.get(arg, 1), span + 1)
            for off in state_offsets_of(c):                           # a declared step reads its own earlier values
                ring[c.id] = max(ring.get(c.id, 1), -self._flat(off) + 1)
        for name in self.burst_lag:                                   # a row is written up to W - 1 steps before its lag says
            ring[name] = ring.get(name, 1) + self.width - 1
        return ring

    def sources(self, offset: tuple[int, ...]) -> np.ndarray:
        """(P,): the flat position p + offset for every position p, -1 where it falls outside (the
        one rule the slot tables and the `inside` flags read)."""
        coords = np.stack(np.unravel_index(np.arange(self.positions), self.spatial), axis=1) + np.array(offset)
        ok = np.all((coords >= 0) & (coords < np.array(self.spatial)), axis=1)
        flat = np.full(self.positions, -1, dtype=np.int64)
        flat[ok] = np.ravel_multi_index(tuple(coords[ok].T), self.spatial)
        return flat

    def _ring_slots(self, offset: tuple[int, ...], size: int) -> np.ndarray:
        """(P,): the slot of p + offset in a ring of `size` slots (slot `size`, the zero, outside)."""
        source = self.sources(offset)
        return np.where(source >= 0, source % size, size)

    def state_slots(self, call: Any, offset: tuple[int, ...]) -> np.ndarray:
        """(P,): the ring slot of a call's own value at p + offset (the zero slot outside)."""
        key = (call.id, offset)
        if key not in self._slots:
            self._slots[key] = self._ring_slots(offset, self.ring[call.id])
        return self._slots[key]

    def inside(self, offset: tuple[int, ...]) -> np.ndarray:
        """(P,) booleans: p + offset lies inside the event."""
        return self.sources(offset) >= 0

    def tap_slots(self, call: Any, i: int, offsets: tuple[tuple[int, ...], ...]) -> np.ndarray:
        """(P, len(offsets)): the columns of `slots(call, i)` for these live offsets, in their order."""
        live = self._live(call, i)
        columns = [live.index(off) for off in offsets]
        table = self.slots(call, i)
        return table if columns == list(range(table.shape[1])) else np.ascontiguousarray(table[:, columns])

    def slots(self, call: Any, i: int) -> np.ndarray:
        """(P, live taps): the ring slot each live tap of argument i reads at every position (the
        zero slot for reads outside the event). Made once per plan: every program of the model,
        at any batch, reads (never writes) the same table."""
        key = (call.id, i)
        if key not in self._slots:
            self._slots[key] = self._slot_table(call, i)
        return self._slots[key]

    def _slot_table(self, call: Any, i: int) -> np.ndarray:
        arg, offsets = call.args[i], self._live(call, i)
        size = self.ring[arg]
        if not offsets:
            return np.full((self.positions, 1), size, dtype=np.int64)
        return np.stack([self._ring_slots(off, size) for off in offsets], axis=1)

DATA_VALUES = ("x", "x_raw")


def norm_rows(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, groups: int) -> np.ndarray:
    """Layer normalisation of a channel-major value (C, B) over the channels of each group
    (channel j in group j mod G), eps 1e-5 as the training kernel's, times weight plus bias (C, 1)."""
    c, batch = x.shape
    grouped = x.reshape(c // groups, groups, batch)
    centred = grouped - grouped.mean(axis=0)
    scale = 1.0 / np.sqrt((centred * centred).mean(axis=0) + 1e-5)
    return (centred * scale).reshape(c, batch) * weight + bias


def state_offsets_of(call: Any) -> tuple[tuple[int, ...], ...]:
    """The offsets a call's step reads its own earlier values at (none without a step)."""
    return call.step.state_offsets if call.step is not None else ()


def data_dependent(calls: list[Any]) -> dict[str, bool]:
    """For every value: does it depend on the data x?"""
    out = {name: True for name in DATA_VALUES}
    for c in calls:
        out[c.id] = any(out.get(a, False) for a in c.args)
    return out


class StepProgram:
    """The plan bound to a model's current weights and one batch: rings, tables, generated step.
    Values are channel-major, (C, B) per position; a subclass may keep them item-major, (B, C)."""

    item_major = False

    def __init__(self, plan: StepPlan, net: Any, batch: int, dtype: np.dtype, constants: dict[str, np.ndarray],
                 record: bool) -> None:
        self.plan, self.batch, self.dtype, self.record = plan, batch, dtype, record
        self.names: dict[str, Any] = {"np": np, "expit": expit, "B": batch, "P": plan.positions}
        self.gemv = gemv_for(np.dtype(dtype)) if batch == 1 else None
        self.names["gemv"] = self.gemv
        # a ring is (slots, C, B) or (slots, B, C): slot `size` stays zero (reads outside the event land there)
        self.rings = {v: np.zeros((size + 1, *self._value_shape(plan.channels(v))), dtype=np.int64 if v == "x_raw" else dtype)
                      for v, size in plan.ring.items()}
        for v, ring in self.rings.items():
            self.names[f"r_{v}"] = ring
        self.constants = {k: in_step_layout(v, self.item_major) for k, v in constants.items()}   # frame values are rewritten here
        self.names.update({f"k_{k}": v for k, v in self.constants.items()})
        self._full = np.zeros((plan.positions, *self._value_shape(plan.calls[plan.output].channels)), dtype=dtype) if record else None
        if record:
            self.names["FULL"] = self._full
        self.stacked = stacked_sums(plan)
        self.stacked_term = {a: (total, lo, hi) for total, terms in self.stacked.items() for a, (lo, hi) in terms.items()}
        self.step: Any = None
        self.redo: Any = None                    # what the output at q reads through step q's own values
        self._generate(net)

    @property
    def redo_calls(self) -> list[Any] | None:
        """The calls `redo(p)` runs (None: the output is drawn after its position, nothing to redo)."""
        drawn_at_lag_0 = self.plan.lag.get(self.plan.output) == 0   # the sampler recomputes the position before each channel
        return [c for c in self.plan.steps if c.id in self.plan.redo] if drawn_at_lag_0 else None

    def _generate(self, net: Any) -> None:
        """`step` and `redo` as generated straight-line numpy code."""
        self._lines: dict[str, list[str]] = {}
        self.source = self._function("step", self.plan.steps, net)
        redo = self._function("redo", self.redo_calls, net) if self.redo_calls is not None else ""
        namespace = dict(self.names)
        exec(self.source + "\n" + redo, namespace)
        self.step = namespace["step"]
        self.redo = namespace.get("redo")

    def clear(self) -> None:
        """Empty rings, as built, for a program used again (steps write every other buffer before reading it)."""
        for ring in self.rings.values():
            ring.fill(0)

    def _value_shape(self, channels: int) -> tuple[int, int]:
        return (self.batch, channels) if self.item_major else (channels, self.batch)

    def _items_first(self, value: np.ndarray) -> np.ndarray:
        """A value of this program ((C, B) or (B, C)) seen as (B, C): a view, to read or to write."""
        return value if self.item_major else value.T

    @property
    def full(self) -> np.ndarray:
        """The output at every position, recorded while teacher forcing: (B, C, P)."""
        assert self._full is not None, "recorded only when teacher forcing"
        return np.ascontiguousarray(self._full.transpose(1, 2, 0) if self.item_major else self._full.transpose(2, 1, 0))

    def write_data(self, q: int, encoded: np.ndarray, levels: np.ndarray) -> None:
        """Position q's data, (B, groups) encoded and as levels, into the data rings."""
        self._items_first(self.rings["x"][q % self.plan.ring["x"]])[:] = encoded
        self._items_first(self.rings["x_raw"][q % self.plan.ring["x_raw"]])[:] = levels

    def write_channel(self, p: int, group: int, encoded: np.ndarray, levels: np.ndarray | None) -> None:
        """Channel group `group` of position p, (B,) encoded and as levels, into the data rings."""
        self._items_first(self.rings["x"][p % self.plan.ring["x"]])[:, group] = encoded
        if levels is not None:
            self._items_first(self.rings["x_raw"][p % self.plan.ring["x_raw"]])[:, group] = levels

    def output_at(self, p: int) -> np.ndarray:
        """The output's channels at position p, (B, C), once its step has run."""
        return self._items_first(self.rings[self.plan.output][p % self.plan.ring[self.plan.output]])

    def _function(self, name: str, calls: list[Any], net: Any) -> str:
        """The source of `name(q)`: the calls in plan order, one guard per run with the same lag."""
        lines = [f"def {name}(q):", "    pass"]
        current = None
        for c in calls:
            if c.id in self.plan.burst_lag:                # a row, right to left, once its last position's inputs are final
                width = self.plan.width
                lines += [f"    p0 = q - ({self.plan.burst_lag[c.id]})", f"    if 0 <= p0 < P and p0 % {width} == {width - 1}:",
                          f"      for p in range(p0, p0 - {width}, -1):", *(f"  {line}" for line in self._emit(c, net))]
                current = None
                continue
            if self.plan.lag[c.id] != current:
                current = self.plan.lag[c.id]
                lines += [f"    p = q - ({current})", "    if 0 <= p < P:"]
            lines += self._emit(c, net)
        return "\n".join(lines)

    def _arg(self, c: Any, i: int) -> str:
        arg, how = c.args[i], self.plan.reads[(c.id, i)]
        if how == "local":
            return f"v_{arg}"
        if how == "constant":
            value = self.names[f"k_{arg}"]
            return f"k_{arg}" if value.ndim == 2 else f"k_{arg}[p]"
        return f"r_{arg}[p % {self.plan.ring[arg]}]"

    def _tensor(self, c: Any, name: str, net: Any) -> np.ndarray:
        return getattr(net, f"{c.id}__{name}").detach().cpu().numpy().astype(self.dtype, copy=False)

    def _emit(self, c: Any, net: Any) -> list[str]:
        if c.id not in self._lines:                 # a call emitted into both functions is prepared once
            self._lines[c.id] = self._lines_of(c, net)
        return self._lines[c.id]

    def _lines_of(self, c: Any, net: Any) -> list[str]:
        v = f"v_{c.id}"
        body = [f"        {line}" for line in self._compute(c, net, v)]
        if c.id in self.plan.ring:
            body.append(f"        r_{c.id}[p % {self.plan.ring[c.id]}] = {v}")
        if self.record and c.id == self.plan.output:
            body.append(f"        FULL[p] = {v}")
        return body

    def _compute(self, c: Any, net: Any, out: Any) -> list[Any]:
        """A call's code: a stacked sum, a term copied into one, or its declared step lowered.
        `out` says where the value goes (the numpy step's variable, the C step's width); the
        subclass's hooks write the code for its target."""
        if c.id in self.stacked:
            return self._stacked_sum(c, net, out)
        if c.id in self.stacked_term:                  # a term of a stacked sum: its input, copied in
            return self._stack_term(c, *self.stacked_term[c.id])
        if c.step is None:                             # context projections of data are not position-local here
            raise ValueError(f"no step rule for {c.kind}")
        return self._declared(c, net, out)

    def _stack_term(self, c: Any, total: str, lo: int, hi: int) -> list[Any]:
        return [f"T_{total}[{lo}:{hi}] = v_{c.args[0]}"]

    def _declared(self, c: Any, net: Any, v: Any) -> list[Any]:
        """A primitive declared by its step: its program, operation by operation, on (C, B) values
        read from the rings (its arguments at their offsets, its own value at its state offsets)."""
        program, key = c.step, c.id
        lines, names = [], []
        for k, op in enumerate(program.ops):
            names.append(f"s_{key}_{k}")
            if op.kind in ("read", "gather"):          # a read is a gather of one tap
                if self.plan.reads[(c.id, op.arg)] != "ring":       # a value of this step or a constant, at p itself
                    expr = self._arg(c, op.arg)
                else:
                    expr = self._gather(c, op, f"{key}_{k}", lines)
            elif op.kind == "embed":                   # per channel group, a (C, levels) table indexed by the level at p
                table = self._tensor(c, op.weight, net)
                if op.mask:
                    table = table * self._tensor(c, op.mask, net)[:, None, :]
                self.names.update({f"E_{key}_{k}_{g}": np.ascontiguousarray(table[g].T) for g in range(table.shape[0])})
                raw = self.plan.ring[c.args[op.arg]]
                expr = " + ".join(f"np.take(E_{key}_{k}_{g}, r_{c.args[op.arg]}[p % {raw}, {g}], axis=1)" for g in range(table.shape[0]))
            elif op.kind == "state":
                self.names[f"H_{key}_{k}"] = self.plan.state_slots(c, op.offset)
                expr = f"r_{key}[H_{key}_{k}[p]]"
            elif op.kind == "inside":                  # one row of ones or zeros per position
                self.names[f"Q_{key}_{k}"] = self._inside_rows(op.offset)
                expr = f"Q_{key}_{k}[p]"
            elif op.kind == "product":
                weight = self._tensor(c, op.weight, net)
                if op.mask:
                    weight = weight * self._tensor(c, op.mask, net)
                self.names[f"W_{key}_{k}"] = np.ascontiguousarray(op.matrix(weight).T)          # (inputs, channels)
                if op.bias:
                    self.names[f"b_{key}_{k}"] = self._tensor(c, op.bias, net)
                parts = [names[i] for i in op.inputs]
                column = parts[0] if len(parts) == 1 else f"np.concatenate(({', '.join(parts)},), axis=0)"
                lines += self._product(names[-1], f"{key}_{k}", column, bool(op.bias))
                continue
            elif op.kind == "act":
                expr = _POINTWISE[op.fn].format(names[op.inputs[0]])
            elif op.kind in ("add", "mul"):
                expr = (" + " if op.kind == "add" else " * ").join(names[i] for i in op.inputs)
            elif op.kind == "concat":
                expr = f"np.concatenate(({', '.join(names[i] for i in op.inputs)},), axis=0)"
            elif op.kind == "gate":                # tanh(a) * sigmoid(b), the sigmoid as (1 + tanh(b / 2)) / 2
                a, half = names[op.inputs[0]], op.channels
                lines.append(f"{names[-1]} = {a}[{half}:] * 0.5; np.tanh({names[-1]}, out={names[-1]}); {names[-1]} *= 0.5; "
                             f"{names[-1]} += 0.5; {names[-1]} *= np.tanh({a}[:{half}])")
                continue
            elif op.kind == "pick":
                self.names[f"I_{key}_{k}"] = np.asarray(op.index, dtype=np.int64)
                expr = f"{names[op.inputs[0]]}[I_{key}_{k}]"
            elif op.kind == "norm":
                self.names[f"N_{key}_{k}"] = functools.partial(norm_rows, weight=self._tensor(c, op.weight, net)[:, None],
                                                               bias=self._tensor(c, op.bias, net)[:, None], groups=op.groups)
                expr = f"N_{key}_{k}({names[op.inputs[0]]})"
            elif op.kind == "attend":
                expr = self._attend(c, op, f"{key}_{k}", names[op.inputs[0]])
            else:
                expr = f"{names[op.inputs[0]]}[{op.start}:{op.start + op.channels}]"
            lines.append(f"{names[-1]} = {expr}")
        return [*lines, f"{v} = {names[program.output]}"]

    def _attend(self, c: Any, op: Any, name: str, query: str) -> str:
        """An attention at p: the key and value slots of the positions it reads (slot = position:
        their rings hold the whole event) with, where not every token among them, its mask."""
        history = self.plan.history(c)
        sources = []
        for i in (op.arg, op.values):
            self.names[f"K_{name}_{i}"] = self._whole_event(c, i)
            sources.append(f"K_{name}_{i}")
        self.names.update({f"A_{name}": attend_rows, f"L_{name}": history.lo, f"U_{name}": history.hi, f"M_{name}": history.masks})
        keys, values = sources
        span = f"L_{name}[p]:U_{name}[p]"
        return f"A_{name}({query}, {keys}[{span}], {values}[{span}], M_{name}[p], {op.heads}, {op.groups})"

    def _whole_event(self, c: Any, i: int) -> np.ndarray:
        """Argument i of call c at every position, one slot per position (what an attention reads
        its keys and values from): its ring, as long as the event, or a constant made (P, ...)."""
        arg = c.args[i]
        if self.plan.reads[(c.id, i)] != "constant":
            return self.rings[arg]
        value = self.constants[arg]
        return value if value.ndim == 3 else np.ascontiguousarray(np.broadcast_to(value, (self.plan.positions, *value.shape)))

    def _inside_rows(self, offset: tuple[int, ...]) -> np.ndarray:
        """(P, value shape of one channel): 1 where p + offset lies inside the event, else 0."""
        flags = self.plan.inside(offset).astype(self.dtype)
        return np.ascontiguousarray(np.broadcast_to(flags[:, None, None], (len(flags), *self._value_shape(1))))

    def _gather(self, c: Any, op: Any, name: str, lines: list[str]) -> str:
        """A read's or a gather's taps from the argument's ring: one tap is its ring slot itself
        (no copy), several are copied side by side into a buffer of this program, (taps x C, B)."""
        arg, offsets = c.args[op.arg], ((op.offset,) if op.kind == "read" else op.offsets)
        self.names[f"G_{name}"] = self.plan.tap_slots(c, op.arg, offsets)
        if len(offsets) == 1:
            return f"r_{arg}[G_{name}[p, 0]]"
        ci = self.plan.channels(arg)
        gathered = np.zeros((len(offsets) * ci, self.batch), dtype=self.dtype)
        self.names.update({f"X_{name}": gathered, f"XT_{name}": gathered.reshape(len(offsets), ci, self.batch)})   # XT: a view
        lines.append(f"np.take(r_{arg}, G_{name}[p], axis=0, out=XT_{name}, mode='clip')")
        return f"X_{name}"

    def _product(self, v: str, key: str, columns: str, bias: bool) -> list[str]:
        """`v = W_key^T columns (+ b_key)` on (C, B) values; for one item with a bias one BLAS call
        does both, for more the bias is added as a whole (C, B) array (a broadcast costs 4x more)."""
        self.names[f"WT_{key}"] = self.names[f"W_{key}"].T                              # Fortran order, no copy
        if bias and self.gemv is not None:
            return [f"{v} = gemv(1.0, WT_{key}, {columns}[:, 0], 1.0, b_{key})[:, None]"]
        if bias:
            b = self.names[f"b_{key}"]
            self.names[f"bB_{key}"] = np.ascontiguousarray(np.broadcast_to(b[:, None], (len(b), self.batch)))
        return [f"{v} = np.dot(WT_{key}, {columns})" + (f"; {v} += bB_{key}" if bias else "")]

    def _stacked_sum(self, c: Any, net: Any, v: Any) -> list[Any]:
        """A sum of 1x1 convolutions of local values (WaveNet's skip connections) as one product:
        the inputs side by side (each copied in where its convolution was) times the stacked weights."""
        key, terms = c.id, self.stacked[c.id]
        weights, bias = self._term_weights(c, net)
        self.names[f"W_{key}"] = np.ascontiguousarray(np.concatenate(weights, axis=0))
        self.names[f"b_{key}"] = np.broadcast_to(np.asarray(bias, dtype=self.dtype), (weights[0].shape[1],)).copy()
        self.names[f"T_{key}"] = np.zeros((max(hi for _, hi in terms.values()), self.batch), dtype=self.dtype)
        return self._product(v, key, f"T_{key}", bias=True)

    def _term_weights(self, c: Any, net: Any) -> tuple[list[np.ndarray], Any]:
        """A stacked sum's terms' matrices, each (inputs, channels) as its product multiplies
        (`StepOp.matrix`, masked), and the sum of their biases."""
        weights, bias = [], 0.0
        for a in c.args:
            term = self.plan.calls[a]
            op = linear_term(term)
            weight = self._tensor(term, op.weight, net)
            weights.append(op.matrix(weight * self._tensor(term, op.mask, net) if op.mask else weight).T)
            if op.bias:
                bias = bias + self._tensor(term, op.bias, net)
        return weights, bias


def linear_term(call: Any) -> Any:
    """The product of a call whose step is one parameter matrix times its one argument at the
    position (a 1x1 convolution), else None."""
    step = call.step
    if step is None or len(step.ops) != 2 or step.output != 1:
        return None
    read, product = step.ops
    offsets = (read.offset,) if read.kind == "read" else read.offsets if read.kind == "gather" else ()
    if read.arg != 0 or offsets != ((0,) * step.rank,) or product.kind != "product" or product.inputs != (0,):
        return None
    return product


def sum_of_reads(call: Any) -> bool:
    """Whether a call's step is the sum of its arguments at the position."""
    step = call.step
    if step is None or len(step.ops) < 3 or step.output != len(step.ops) - 1:
        return False
    *reads, total = step.ops
    return (total.kind == "add" and total.inputs == tuple(range(len(reads)))
            and all(op.kind == "read" and op.arg == i and op.offset == (0,) * step.rank for i, op in enumerate(reads)))


def in_step_layout(value: np.ndarray, item_major: bool) -> np.ndarray:
    """A constant as the step reads it: (B, C) as (C, B) or kept; (B, C, P) as (P, C, B) or
    (P, B, C): one value per position."""
    if item_major:
        return np.ascontiguousarray(value if value.ndim == 2 else value.transpose(2, 0, 1))
    return np.ascontiguousarray(value.T if value.ndim == 2 else value.transpose(2, 1, 0))


def stacked_sums(plan: StepPlan) -> dict[str, dict[str, tuple[int, int]]]:
    """The step's additions whose every term is a 1x1 convolution (its step one product of its
    argument at the position) of a local value, computed in the same step and read by nothing
    else: by addition, each term's column range in the side-by-side inputs."""
    readers: dict[str, int] = {}
    for c in plan.steps:
        for a in c.args:
            readers[a] = readers.get(a, 0) + 1
    out = {}
    for c in plan.steps:
        if not sum_of_reads(c) or len(c.args) < 2 or len(set(c.args)) != len(c.args):
            continue
        terms, width = {}, 0
        for i, a in enumerate(c.args):
            conv = plan.calls.get(a)
            if (conv is None or linear_term(conv) is None or plan.reads.get((c.id, i)) != "local" or readers[a] != 1
                    or a in plan.ring or a == plan.output or plan.reads.get((a, 0)) != "local" or len(conv.args) != 1):
                break
            ci = plan.channels(conv.args[0])
            terms[a] = (width, width + ci)
            width += ci
        else:
            out[c.id] = terms
    return out


def constant_tensors(plan: StepPlan, net: Any, values: dict[str, torch.Tensor], run: Any, n: int, spatial: tuple[int, ...],
                     dtype: torch.dtype, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Values that never read the data (context paths, fully masked layers), computed once in torch
    on whole tensors: (B, C) when constant over positions, else (B, C, P)."""
    zeros = {"x": torch.zeros((n, plan.groups, *spatial), dtype=dtype, device=device),
             "x_raw": torch.zeros((n, plan.groups, *spatial), dtype=torch.long, device=device)}
    env = {**zeros, **values}
    out = {}
    for c in plan.constants + plan.frame_calls:     # frame values start as those of an empty video (right for frame 0)
        env[c.id] = run(c, net, [env[a] for a in c.args])
    for c in plan.steps:
        for i, arg in enumerate(c.args):
            if plan.reads[(c.id, i)] != "constant" or arg in out:
                continue
            value = env[arg].detach()
            if value.dim() > 2 and all(s == 1 for s in value.shape[2:]) and arg not in plan.frame_values:
                value = value.reshape(value.shape[0], value.shape[1])
            if value.dim() > 2:
                value = value.expand(n, value.shape[1], *spatial).reshape(n, value.shape[1], -1)
            else:
                value = value.expand(n, value.shape[1])
            out[arg] = value.contiguous()
    return out


def constant_values(plan: StepPlan, net: Any, values: dict[str, torch.Tensor], run: Any, n: int, spatial: tuple[int, ...],
                    dtype: torch.dtype) -> dict[str, np.ndarray]:
    """`constant_tensors` as numpy arrays, for the CPU's generated step."""
    return {k: np.ascontiguousarray(v.cpu().numpy()) for k, v in constant_tensors(plan, net, values, run, n, spatial, dtype).items()}


def update_frame_values(plan: StepPlan, net: Any, values: dict[str, torch.Tensor], run: Any, x_raw: torch.Tensor,
                        x: torch.Tensor, constants: dict[str, Any], frame: int | None, item_major: bool = False) -> None:
    """Recompute the frame values from the data known so far (x_raw and its encoding x, shaped
    (n, C, *spatial)) and write those of frame `frame` (None: every frame) into the arrays the step
    reads. A frame value of frame t reads only frames < t, so they must be complete."""
    env = {"x": x, "x_raw": x_raw, **values}
    for c in plan.frame_calls:
        env[c.id] = run(c, net, [env[a] for a in c.args])
    span = slice(None) if frame is None else slice(frame * plan.frame, (frame + 1) * plan.frame)
    for name in plan.frame_values:
        if name in constants:
            value = env[name].detach().reshape(x.shape[0], env[name].shape[1], -1)
            target = constants[name]
            if isinstance(target, torch.Tensor):      # the static program's constants, on the model's device
                target[:, :, span] = value[:, :, span].to(target.dtype)
            else:                                     # a CPU step's (P, C, B) or (P, B, C) constants
                target[span] = value[:, :, span].cpu().numpy().transpose((2, 0, 1) if item_major else (2, 1, 0))
