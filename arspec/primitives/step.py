"""The step IR: a primitive declared once, by what it computes at one position.

A declared primitive writes its per-position step with a `StepBuilder`: reads of its arguments at
fixed offsets (its input taps), reads of its own value at other positions (its state taps: a
Spatial LSTM's (h, c) to the left and above; a mirrored Diagonal LSTM's to the right and above,
earlier in a raster order whose columns run right to left), and a few operations on the vectors read —
products with a parameter matrix (masked or not), activations, sums, products, concatenation and
channel ranges. From that one declaration follow:

* its taps and its dependency footprint (`footprint_of`: the input taps, closed over the state
  taps — it cannot disagree with the step);
* every engine's code: the whole-tensor kernel (the step at every position at once, or scanned
  along the wavefront when it reads its own state), the cached sampler's step, the generated file.

The IR holds plain data only (names, offsets, shapes), so it is framework-free like the rest of
the core, and it can be written into generated code with `repr()`."""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from arspec.domains import Deps
from arspec.domains.pattern import AttentionPattern
from arspec.primitives.base import Primitive, Taps
from arspec.types import TensorType

StepFn = Literal["tanh", "sigmoid", "relu", "elu", "identity"]


@dataclass(frozen=True)
class StepOp:
    """One operation of a step: `kind` and its operands (indices of earlier values), a tap's
    argument and offset (a gather's offsets), a product's parameter names (and, for a convolution's
    weight, the kernel taps its parts are), an activation's name, a channel range, the channels a
    pick takes; a norm's channel groups; an attention's heads, channel groups, key argument
    (`arg`), value argument (`values`) and the rule of its pattern (`rule`: causal, window,
    stride, chunk, as arspec.domains.pattern.allowed_keys takes them)."""

    kind: Literal["read", "gather", "embed", "state", "inside", "product", "act", "add", "mul", "concat", "slice", "gate",
                  "pick", "norm", "attend"]
    inputs: tuple[int, ...] = ()
    channels: int = 0
    arg: int = 0
    offset: tuple[int, ...] = ()
    weight: str = ""
    mask: str = ""
    bias: str = ""
    fn: StepFn = "identity"
    start: int = 0
    index: tuple[int, ...] = ()
    offsets: tuple[tuple[int, ...], ...] = ()
    taps: tuple[int, ...] = ()
    groups: int = 1
    heads: int = 0
    values: int = 0
    rule: tuple[Any, ...] = ()

    def matrix(self, weight: Any) -> Any:
        """A product's parameter as the (channels, inputs) matrix it multiplies by: as it is, or
        for a convolution's (Co, Ci, *kernel) weight its taps `taps`, tap-major (numpy or torch
        alike; every engine calls this, so none has its own idea of the layout)."""
        if weight.ndim == 1:                 # a vector: the (channels, 1) matrix of a one-channel part
            return weight[:, None]
        if not self.taps:
            return weight
        co, ci = weight.shape[0], weight.shape[1]
        return weight.reshape(co, ci, -1)[:, :, list(self.taps)].swapaxes(1, 2).reshape(co, len(self.taps) * ci)


@dataclass(frozen=True)
class DeclaredStep:
    """A declared step: operations in order (value i is the result of op i), the value that is the
    primitive's output at the position (also its state, when it reads its own earlier values)."""

    ops: tuple[StepOp, ...]
    output: int
    rank: int

    @property
    def state_offsets(self) -> tuple[tuple[int, ...], ...]:
        return tuple(dict.fromkeys(op.offset for op in self.ops if op.kind == "state"))

    def input_offsets(self, arg: int) -> tuple[tuple[int, ...], ...]:
        return tuple(dict.fromkeys(o for op in self.ops if op.kind in ("read", "gather") and op.arg == arg
                                   for o in (op.offsets if op.kind == "gather" else (op.offset,))))

    @property
    def arguments(self) -> int:
        return 1 + max((op.arg for op in self.ops if op.kind in ("read", "gather")), default=-1)

    @property
    def history_args(self) -> tuple[int, ...]:
        """The arguments an attention reads at every position its pattern allows (keys, values):
        the engines keep their whole history, not a window of fixed offsets."""
        return tuple(dict.fromkeys(a for op in self.ops if op.kind == "attend" for a in (op.arg, op.values)))


class StepError(ValueError):
    """A step that cannot be declared that way (channels that do not match, state reads that no
    scan order can compute)."""


def scan_axes(offsets: Sequence[tuple[int, ...]], rank: int) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """A raster order in which every state offset points to an earlier position: the axes from
    slowest to fastest and, per axis, +1 (ascending) or -1 (reversed); the plain raster order when
    it serves, None when none does (reads that would form a cycle, such as left and right)."""
    for axes in itertools.permutations(range(rank)):
        for signs in itertools.product((1, -1), repeat=rank):
            if all(tuple(signs[a] * off[a] for a in axes) < (0,) * rank for off in offsets):
                return axes, signs
    return None


@dataclass
class StepBuilder:
    """Collects a step: `v = b.read(0, (-1, 0))`, `g = b.product([v, s], "weight", bias="bias")`."""

    rank: int
    ops: list[StepOp] = field(default_factory=list)
    out_channels: int | None = None
    arg_channels: tuple[int, ...] = ()

    def _add(self, op: StepOp) -> int:
        self.ops.append(op)
        return len(self.ops) - 1

    def channels(self, value: int) -> int:
        return self.ops[value].channels

    def read(self, arg: int, offset: Sequence[int]) -> int:
        """Argument `arg` at p + offset (zero outside the tensor)."""
        offset = tuple(int(o) for o in offset)
        if len(offset) != self.rank or arg >= len(self.arg_channels):
            raise StepError(f"read({arg}, {offset}) does not fit {len(self.arg_channels)} argument(s) of rank {self.rank}")
        return self._add(StepOp("read", channels=self.arg_channels[arg], arg=arg, offset=offset))

    def gather(self, arg: int, offsets: Sequence[Sequence[int]]) -> int:
        """Argument `arg` at each p + offset, side by side (offset-major: a convolution's taps)."""
        taps = tuple(tuple(int(o) for o in off) for off in offsets)
        if arg >= len(self.arg_channels) or any(len(off) != self.rank for off in taps):
            raise StepError(f"gather({arg}, ...) does not fit {len(self.arg_channels)} argument(s) of rank {self.rank}")
        return self._add(StepOp("gather", channels=len(taps) * self.arg_channels[arg], arg=arg, offsets=taps))

    def embed(self, arg: int, table: str, channels: int, select: str = "") -> int:
        """Argument `arg` read at the position as class indices (one per data channel group g),
        each looked up in its group's rows of a parameter `table` (G, classes, channels), optionally
        times a 0/1 buffer `select` (G, channels) saying which channels group g feeds, summed over g."""
        if arg >= len(self.arg_channels):
            raise StepError(f"embed({arg}, ...) does not fit {len(self.arg_channels)} argument(s)")
        return self._add(StepOp("embed", channels=int(channels), arg=arg, weight=table, mask=select))

    def state(self, offset: Sequence[int]) -> int:
        """This primitive's own value at p + offset (zero outside the tensor). The state offsets
        together must point earlier in some raster order (axes permuted or reversed; `scan_axes`):
        the order the engines compute the positions in."""
        offset = tuple(int(o) for o in offset)
        if len(offset) != self.rank or not any(offset):
            raise StepError(f"a state read must be at another position of rank {self.rank}, got offset {offset}")
        if self.out_channels is None:
            raise StepError("state reads need the output's channels (StepBuilder(out_channels=...))")
        return self._add(StepOp("state", channels=self.out_channels, offset=offset))

    def inside(self, offset: Sequence[int]) -> int:
        """One channel: 1 where p + offset lies inside the event, 0 outside — what a state read
        at that offset would find of a value that is 1 everywhere (a bias that a recurrence adds
        only where its earlier state exists)."""
        offset = tuple(int(o) for o in offset)
        if len(offset) != self.rank:
            raise StepError(f"inside({offset}) does not fit rank {self.rank}")
        return self._add(StepOp("inside", channels=1, offset=offset))

    def product(self, parts: Sequence[int], weight: str, channels: int, mask: str = "", bias: str = "",
                taps: Sequence[int] = ()) -> int:
        """(weight * mask) @ concat(parts) + bias: a parameter matrix (channels, sum of parts'
        channels), an optional 0/1 buffer of the same shape, an optional bias parameter. With
        `taps`, the weight is a convolution's (channels, Ci, *kernel) and the parts are its kernel
        taps `taps` (flat indices), Ci channels each, in that order (`StepOp.matrix`); a vector
        weight (channels,) multiplies a one-channel part."""
        return self._add(StepOp("product", tuple(parts), int(channels), weight=weight, mask=mask, bias=bias,
                                taps=tuple(int(t) for t in taps)))

    def act(self, fn: StepFn, value: int) -> int:
        return self._add(StepOp("act", (value,), self.channels(value), fn=fn))

    def add(self, *values: int) -> int:
        self._same(values)
        return self._add(StepOp("add", tuple(values), self.channels(values[0])))

    def mul(self, *values: int) -> int:
        self._same(values)
        return self._add(StepOp("mul", tuple(values), self.channels(values[0])))

    def concat(self, *values: int) -> int:
        return self._add(StepOp("concat", tuple(values), sum(self.channels(v) for v in values)))

    def slice(self, value: int, start: int, stop: int) -> int:
        """Channels start..stop-1 of a value."""
        if not 0 <= start < stop <= self.channels(value):
            raise StepError(f"channels {start}..{stop - 1} of a value of {self.channels(value)}")
        return self._add(StepOp("slice", (value,), stop - start, start=start))

    def gate(self, value: int) -> int:
        """tanh of the first half of a value's channels times the sigmoid of the second half."""
        if self.channels(value) % 2:
            raise StepError(f"a gate needs an even number of channels, got {self.channels(value)}")
        return self._add(StepOp("gate", (value,), self.channels(value) // 2))

    def pick(self, value: int, index: Sequence[int]) -> int:
        """Channels index[0], index[1], ... of a value (a subset or a permutation)."""
        index = tuple(int(i) for i in index)
        if not index or not all(0 <= i < self.channels(value) for i in index):
            raise StepError(f"channels {list(index)[:8]} of a value of {self.channels(value)}")
        return self._add(StepOp("pick", (value,), len(index), index=index))

    def norm(self, value: int, weight: str, bias: str, groups: int = 1) -> int:
        """Layer normalisation of a value over the channels of each group (channel j is in group
        j mod `groups`), times a parameter `weight` plus a parameter `bias` (eps 1e-5)."""
        if self.channels(value) % groups:
            raise StepError(f"{self.channels(value)} channels do not split into {groups} groups")
        return self._add(StepOp("norm", (value,), self.channels(value), weight=weight, bias=bias, groups=int(groups)))

    def attend(self, query: int, keys: int, values: int, heads: int, groups: int, causal: str,
               window: tuple[tuple[int, int], ...] | None = None, stride: int | None = None, chunk: int | None = None) -> int:
        """Multi-head scaled dot-product attention of a query value over arguments `keys` and
        `values` read at every position the pattern allows (arspec.domains.pattern: the ordering's
        rank rule, a window, a stride, a chunk; tokens are (position, channel group) as in
        arspec.primitives.attention). A query with no allowed key is exactly zero."""
        if max(keys, values) >= len(self.arg_channels):
            raise StepError(f"attend(..., {keys}, {values}) does not fit {len(self.arg_channels)} argument(s)")
        split = groups * heads
        if self.channels(query) % split or self.arg_channels[keys] != self.channels(query) or self.arg_channels[values] % split:
            raise StepError(f"queries of {self.channels(query)}, keys of {self.arg_channels[keys]} and values of "
                            f"{self.arg_channels[values]} channels do not split into {heads} heads x {groups} groups")
        window = None if window is None else tuple((int(lo), int(hi)) for lo, hi in window)
        return self._add(StepOp("attend", (query,), self.arg_channels[values], arg=keys, values=values, heads=int(heads),
                                groups=int(groups), rule=(causal, window, stride, chunk)))

    def _same(self, values: Sequence[int]) -> None:
        if len({self.channels(v) for v in values}) != 1:
            raise StepError(f"operands of different channel counts: {[self.channels(v) for v in values]}")

    def finish(self, output: int) -> DeclaredStep:
        if self.out_channels is not None and self.channels(output) != self.out_channels:
            raise StepError(f"the step's output has {self.channels(output)} channels, the primitive {self.out_channels}")
        states = list(dict.fromkeys(op.offset for op in self.ops if op.kind == "state"))
        if states and scan_axes(states, self.rank) is None:
            raise StepError(f"state reads at {states} point earlier in no raster order (axes permuted or reversed): "
                            "no position could be computed first")
        return DeclaredStep(tuple(self.ops), output, self.rank)


# -- what follows from a declaration --------------------------------------------------------------

def footprint_of(program: DeclaredStep, args: Sequence[Deps], channels: int, spatial: tuple[int, ...], groups: int = 1,
                 buffers: dict[str, np.ndarray] | None = None, pattern: AttentionPattern | None = None, mask_set: int = 0) -> Deps:
    """The dependency sets of a declared primitive's output: each value of the step followed
    through the domain's rules (a read at an offset is a one-tap convolution, a product a 1x1
    convolution with its mask's connectivity, elementwise operations unions), the state reads
    left out, then closed over the state offsets (every channel reading its whole state there;
    with channel groups, a channel of group g reads its group's values at its own position). An
    attention follows the domain's rule for its `pattern` (under mask set `mask_set`): the pattern's ranks
    are the ordering's, which the step does not hold."""
    values: list[Deps] = []
    for op in program.ops:
        if op.kind == "read":
            values.append(_tap(args[op.arg], op.offset, spatial))
        elif op.kind == "gather":
            taps = [_tap(args[op.arg], off, spatial) for off in op.offsets]
            values.append(taps[0].concat(taps[1:]) if taps else args[op.arg].empty(0, spatial))
        elif op.kind == "embed":                                  # channel j reads the groups its select row names
            select = (buffers or {}).get(op.mask) if op.mask else None
            groups = args[op.arg].channels
            conn = np.ones((op.channels, groups), dtype=bool) if select is None else np.asarray(select).T != 0
            values.append(args[op.arg].conv(conn.reshape(conn.shape + (1,) * len(spatial)), (1,) * len(spatial),
                                            (0,) * len(spatial), spatial))
        elif op.kind in ("state", "inside"):
            values.append(args[0].empty(op.channels, spatial))
        elif op.kind == "product":
            parts = [values[i] for i in op.inputs]
            width = sum(program.ops[i].channels for i in op.inputs)
            if width == 0:                                           # no input at all: the bias alone
                values.append(args[0].empty(op.channels, spatial))
                continue
            joined = parts[0].concat(parts[1:]) if len(parts) > 1 else parts[0]
            mask = (buffers or {}).get(op.mask) if op.mask else None
            conn = (np.ones((op.channels, width), dtype=bool) if mask is None else op.matrix(np.asarray(mask)) != 0)
            conn = conn.reshape((op.channels, width) + (1,) * len(spatial))
            values.append(joined.conv(conn, (1,) * len(spatial), (0,) * len(spatial), spatial))
        elif op.kind in ("add", "mul"):
            acc = values[op.inputs[0]]
            for i in op.inputs[1:]:
                acc = acc.union(values[i])
            values.append(acc)
        elif op.kind == "concat":
            parts = [values[i] for i in op.inputs]
            values.append(parts[0].concat(parts[1:]) if len(parts) > 1 else parts[0])
        elif op.kind == "slice":
            values.append(values[op.inputs[0]].select(np.arange(op.start, op.start + op.channels)))
        elif op.kind == "pick":
            values.append(values[op.inputs[0]].select(np.asarray(op.index, dtype=np.int64)))
        elif op.kind == "gate":
            value, half = values[op.inputs[0]], op.channels
            values.append(value.select(np.arange(half)).union(value.select(np.arange(half, 2 * half))))
        elif op.kind == "norm":                                   # every channel of a group reads the group
            group = np.arange(op.channels) % op.groups
            conn = (group[:, None] == group[None, :]).reshape((op.channels, op.channels) + (1,) * len(spatial))
            values.append(values[op.inputs[0]].conv(conn, (1,) * len(spatial), (0,) * len(spatial), spatial))
        elif op.kind == "attend":
            if pattern is None:
                raise StepError("an attention's footprint needs its pattern (the ordering's ranks)")
            values.append(values[op.inputs[0]].attend(args[op.arg], args[op.values], pattern, mask_set))
        else:                                                     # act
            values.append(values[op.inputs[0]])
    out = values[program.output]
    if program.state_offsets:
        out = out.closure(list(program.state_offsets), groups, channels, spatial)
    return out


def _tap(deps: Deps, offset: tuple[int, ...], spatial: tuple[int, ...]) -> Deps:
    """The argument read at p + offset: a one-tap convolution (identity over channels)."""
    c = deps.channels
    conn = np.eye(c, dtype=bool).reshape((c, c) + (1,) * len(spatial))
    return deps.conv(conn, (1,) * len(spatial), tuple(-o for o in offset), spatial)


def step_program(primitive: Primitive, args: Sequence[TensorType], out: TensorType) -> DeclaredStep | None:
    """A primitive's step for arguments of these types (`Primitive.step`), or None where it
    declares none. The cached-generation engines lower this; its footprint (`footprint_of`) is
    the primitive's own (a test holds every built-in primitive to that)."""
    b = StepBuilder(len(out.spatial), out_channels=int(out.channels), arg_channels=tuple(int(a.channels) for a in args))
    value = primitive.step(b)
    return None if value is None else b.finish(value)


class DeclaredPrimitive(Primitive):
    """A primitive declared by its step (see the module docstring). A subclass (a dataclass) says
    its `kind`, its parameters and buffers, its output channels and its arguments' channels, and
    writes `step`; its taps, footprint and every engine's code follow from that."""

    @property
    def out_channels(self) -> int:
        raise NotImplementedError

    @property
    def in_channels(self) -> tuple[int, ...]:
        raise NotImplementedError

    @property
    def rank(self) -> int:
        raise NotImplementedError

    def step(self, b: StepBuilder) -> int:
        """Declare the step with `b`; return the value that is the output at the position."""
        raise NotImplementedError

    @property
    def program(self) -> DeclaredStep:
        cached = self.__dict__.get("_program")
        if cached is None:
            b = StepBuilder(self.rank, out_channels=self.out_channels, arg_channels=self.in_channels)
            cached = b.finish(self.step(b))
            self.__dict__["_program"] = cached
        return cached

    def out_type(self, args: Sequence[TensorType]) -> TensorType:
        return TensorType(self.out_channels, args[0].spatial)

    def attrs(self) -> dict[str, Any]:
        return {"program": self.program}

    def taps(self, rank: int, arguments: int) -> list[Taps] | None:
        """The input taps of the step (its state taps are `state_taps`)."""
        offsets = [self.program.input_offsets(i) for i in range(arguments)]
        return [Taps(o, (True,) * len(o)) for o in offsets]

    @property
    def state_taps(self) -> tuple[tuple[int, ...], ...]:
        return self.program.state_offsets

    def footprint(self, args: Sequence[Deps], out: TensorType, mask: int) -> Deps:
        return footprint_of(self.program, args, out.channels, out.spatial, int(getattr(self, "groups", 1)), self.buffers())
