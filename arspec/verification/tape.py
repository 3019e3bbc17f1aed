"""Recording what a module does: every ATen operation of one forward pass, in order, with which
tensors it read and wrote. Each tensor is classified as the data, a parameter, random (dropout
masks), or constant (buffers, masks, `torch.tril(...)` built inside forward: independent of the
data, the parameters and the random draws); the values of constant and integer tensors are kept
(masks decide which dependencies exist, indices where they come from), other values are not.

The recorder is a `TorchDispatchMode`: it sees the operations below autograd, after PyTorch has
decomposed `F.linear`, `einsum`, `F.one_hot` and the like into ATen operations, so a hand-written
module is recorded whatever Python it is written in. Values read back into Python (`.item()`,
`.tolist()`, `.numpy()`) are noted: what the module does with them is not recorded."""
from __future__ import annotations

import math
import traceback
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.weak import WeakIdKeyDictionary

RANDOM_OPS = ("bernoulli", "rand", "randn", "randint", "randperm", "normal", "uniform", "native_dropout", "multinomial",
              "exponential", "geometric", "cauchy", "log_normal", "random", "poisson", "rand_like", "randn_like", "randint_like")
ESCAPES = ("item", "tolist", "numpy", "__array__", "__bool__", "__int__", "__float__", "__index__")


@dataclass(frozen=True)
class Ref:
    """A tensor as an operation saw it: its identity and the version of its contents then."""

    id: int
    version: int


@dataclass
class TensorInfo:
    """What is known of one tensor: shape, dtype, kind ('data', 'param', 'random', 'const' or
    'computed'), whether its values are constant, and the tensor it is a view of."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    kind: str
    const: bool
    root: int


@dataclass
class Entry:
    """One operation: the function, its arguments (tensors as Refs), its outputs (Refs), the
    arguments it writes (positions in the flattened arguments), and the user's line that ran it."""

    func: Any
    args: tuple
    kwargs: dict
    outputs: Any
    writes: tuple[int, ...]
    where: str
    constant: bool = False          # every input constant and not random: the outputs are known values


@dataclass
class Tape:
    entries: list[Entry] = field(default_factory=list)
    tensors: dict[int, TensorInfo] = field(default_factory=dict)
    values: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    data: int = -1
    output: Any = None
    escapes: list[str] = field(default_factory=list)

    def info(self, ref: Ref) -> TensorInfo:
        return self.tensors[ref.id]

    def value(self, ref: Ref) -> torch.Tensor | None:
        """The value a constant or integer tensor had when it was read (None for others)."""
        return self.values.get((ref.id, ref.version))

    def last_uses(self) -> dict[int, list[int]]:
        """Per entry, the tensors (by id) no later entry and no output reads (dropped then). A
        tensor that shares storage with another (a view) is kept while any of them is used."""
        last: dict[int, int] = {}
        roots = {tid: info.root for tid, info in self.tensors.items()}
        keep = {roots.get(r.id, r.id) for r in tree_flatten(self.output)[0] if isinstance(r, Ref)}
        for index, entry in enumerate(self.entries):
            for r in tree_flatten((entry.args, entry.kwargs, entry.outputs))[0]:
                if isinstance(r, Ref):
                    last[roots.get(r.id, r.id)] = index
        out: dict[int, list[int]] = {}
        for tid, root in roots.items():
            if root in keep or tid == self.data:
                continue
            final = last.get(root)
            if final is not None:
                out.setdefault(final, []).append(tid)
        return out

    def peak_data_elements(self) -> int:
        """The most elements of values that depend on the data (the data itself, and what was
        computed from it) alive at once in the pass, each dropped after its last use: what a
        replay of the pass, and each row of its backward, hold at their peak."""
        uses = self.last_uses()
        dependent = {self.data}
        live = {self.data}
        now = peak = math.prod(self.tensors[self.data].shape)
        for index, entry in enumerate(self.entries):
            reads = {self.tensors[r.id].root for r in tree_flatten((entry.args, entry.kwargs))[0] if isinstance(r, Ref)}
            if reads & dependent:
                for r in tree_flatten(entry.outputs)[0]:
                    root = self.tensors[r.id].root if isinstance(r, Ref) else None
                    if root is not None and root not in live:
                        dependent.add(root)
                        live.add(root)
                        now += math.prod(self.tensors[root].shape)
            peak = max(peak, now)
            for tid in uses.get(index, ()):
                if tid in live:
                    live.discard(tid)
                    now -= math.prod(self.tensors[tid].shape)
        return peak


def _user_line() -> str:
    """The innermost line of the stack outside torch and this package: where the module did it."""
    for frame in reversed(traceback.extract_stack()[:-3]):
        name = frame.filename.replace("\\", "/")
        if "/torch/" not in name and "/arspec/verification/" not in name and "/contextlib.py" not in name:
            return f"{frame.filename}:{frame.lineno}"
    return "?"


def _is_random(func: Any) -> bool:
    name = func._schema.name.split("::")[-1]
    return any(name == r or name == r + "_" or name.startswith(r + ".") for r in RANDOM_OPS)


SHAPE_ONLY = ("new_zeros", "new_ones", "new_full", "new_empty", "new_empty_strided", "zeros_like", "ones_like", "full_like",
              "empty_like", "sym_size", "sym_numel", "sym_stride")


def _shape_only(func: Any) -> bool:
    """Operations whose result does not depend on their argument's values (only its shape)."""
    return func._schema.name.split("::")[-1] in SHAPE_ONLY


class Recorder(TorchDispatchMode):
    """Records a tape (see the module docstring)."""

    def __init__(self, data: torch.Tensor, parameters: Sequence[torch.Tensor]) -> None:
        super().__init__()
        self.tape = Tape()
        self.ids: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.parameters = {id(p) for p in parameters if p.requires_grad}
        self.next = 0
        self.tape.data = self._ref(data, kind="data").id

    def _ref(self, t: torch.Tensor, kind: str | None = None, root: int | None = None) -> Ref:
        """The Ref of `t` now, registering it on first sight (a tensor not made by a recorded
        operation: the data, a parameter, or a constant such as a buffer)."""
        if t not in self.ids:
            tid = self.next
            self.next += 1
            self.ids[t] = tid
            if kind is None:
                kind = "param" if id(t) in self.parameters else "const"
            self.tape.tensors[tid] = TensorInfo(tuple(t.shape), t.dtype, kind, kind == "const", tid if root is None else root)
        tid = self.ids[t]
        ref = Ref(tid, int(t._version))
        info = self.tape.tensors[tid]
        if (info.const or not (t.dtype.is_floating_point or t.dtype.is_complex)) and (tid, ref.version) not in self.tape.values:
            self.tape.values[(tid, ref.version)] = t.detach().clone()
        return ref

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        name = func._schema.name
        if name == "aten::_local_scalar_dense":
            self.tape.escapes.append(f"a value read into Python (item()) at {_user_line()}")
        inputs = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
        before = [self._ref(t) for t in inputs]
        out = func(*args, **kwargs)
        writes = tuple(i for i, a in enumerate(func._schema.arguments) if a.alias_info is not None and a.alias_info.is_write)
        const = (all(self.tape.tensors[r.id].const for r in before) or _shape_only(func)) and not _is_random(func)
        view_of = before[0].id if func.is_view and before else None

        def register(t: Any) -> Any:
            if not isinstance(t, torch.Tensor):
                return t
            if t in self.ids:                      # an argument written in place (or returned as it is)
                info = self.tape.tensors[self.ids[t]]
                if not const:
                    self._unconst(info.root)
                return self._ref(t)
            root = self.tape.tensors[view_of].root if view_of is not None else None
            return self._ref(t, kind="const" if const else ("random" if _is_random(func) else "computed"), root=root)
        outputs = tree_map(register, out)
        args_refs = tree_map(lambda a: before.pop(0) if isinstance(a, torch.Tensor) else a, (args, kwargs))
        self.tape.entries.append(Entry(func, args_refs[0], args_refs[1], outputs, writes, _user_line(), const))
        return out

    def _unconst(self, root: int) -> None:
        """A tensor (and every view of the same storage) written with values that are not constant."""
        for info in self.tape.tensors.values():
            if info.root == root:
                info.const = False


class EscapeWatch(TorchFunctionMode):
    """Notes where tensor values leave for Python (the recorder sees `.item()`; this sees the rest)."""

    def __init__(self, tape: Tape) -> None:
        super().__init__()
        self.tape = tape

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        name = getattr(func, "__name__", "")
        if name in ESCAPES and name != "item":
            self.tape.escapes.append(f"tensor values read into Python ({name}()) at {_user_line()}")
        return func(*args, **(kwargs or {}))


def record(module: torch.nn.Module, x: torch.Tensor) -> Tape:
    """One forward pass of `module` on `x`, recorded (without gradients)."""
    parameters = list(module.parameters())
    recorder = Recorder(x, parameters)
    with torch.no_grad(), warnings.catch_warnings(), EscapeWatch(recorder.tape), recorder:
        warnings.simplefilter("ignore")           # the module's own warnings are not what this run reports
        out = module(x)
        recorder.tape.output = tree_map(lambda t: recorder._ref(t) if isinstance(t, torch.Tensor) else t, out)
    return recorder.tape
