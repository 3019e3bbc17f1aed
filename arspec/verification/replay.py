"""Replaying a recorded forward pass in a semiring: every tensor gets a shadow of its shape (what it
depends on, in the semiring's terms) and two flags per element, `zero` and `ninf`, for values
forced to 0 or -inf whatever the data and the parameters (a masked weight, a masked attention
score, a padded border). Products with a forced zero and sums with a forced -inf carry no
dependency: that is how a mask, however it is written, removes one.

Views replay as views of their base's shadow, and writes into a tensor write into its shadow, so
`buf[:, :k] = h` or an in-place `masked_fill_` is followed as the module did it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._pytree import tree_flatten, tree_map

from arspec.verification.semiring import Semiring
from arspec.verification.tape import Ref, Tape

MASK_VALUE = -1e4      # a constant at or below this, added or filled in before a softmax, counts as -inf (exp underflows)


@dataclass
class Shadow:
    """What one tensor depends on (`dep`), and which of its elements are forced to 0 or to -inf."""

    dep: torch.Tensor
    zero: torch.Tensor
    ninf: torch.Tensor

    def map(self, f: Any) -> Shadow:
        """The same shape function (a view, a permutation, an indexing) applied to every part."""
        return Shadow(f(self.dep), f(self.zero), f(self.ninf))

    def expand(self, shape: tuple[int, ...]) -> Shadow:
        return self.map(lambda t: t.expand(shape))


class UnknownOp(Exception):
    """No rule for this operation (it is then traced as reading all of its inputs)."""


class Replay:
    """The state of one replay: the shadow of every live tensor."""

    def __init__(self, tape: Tape, semiring: Semiring, data: torch.Tensor) -> None:
        self.tape, self.sr = tape, semiring
        self.env: dict[int, Shadow] = {}
        self.unknown: dict[str, str] = {}
        info = tape.tensors[tape.data]
        self.env[tape.data] = Shadow(data * 1.0, torch.zeros(info.shape, dtype=torch.bool), torch.zeros(info.shape, dtype=torch.bool))

    # -- shadows of tensors ---------------------------------------------------------------------
    def none(self, shape: tuple[int, ...], zero: torch.Tensor | None = None, ninf: torch.Tensor | None = None) -> Shadow:
        """A shadow that reads nothing (flags given or False)."""
        false = torch.zeros(shape, dtype=torch.bool)
        return Shadow(torch.full(shape, self.sr.none, dtype=torch.float64), false if zero is None else zero,
                      false if ninf is None else ninf)

    def from_value(self, value: torch.Tensor) -> Shadow:
        """The shadow of a constant: it reads nothing; its zeros and very negative values are forced."""
        v = value.detach()
        if v.is_complex():
            v = v.abs()
        zero = v == 0
        ninf = (v <= MASK_VALUE) if (v.dtype.is_floating_point) else torch.zeros(v.shape, dtype=torch.bool)
        return self.none(tuple(v.shape), zero.expand(v.shape), ninf.expand(v.shape))

    def get(self, ref: Ref) -> Shadow:
        """The current shadow of a tensor (made on first use: a constant from its value, a
        parameter or a random tensor reading nothing)."""
        if ref.id not in self.env:
            info = self.tape.tensors[ref.id]
            value = self.tape.value(ref)
            self.env[ref.id] = self.from_value(value) if info.kind == "const" and value is not None else self.none(info.shape)
        return self.env[ref.id]

    def value(self, x: Any) -> Any:
        """The value of a constant or integer tensor argument (None for others); other arguments as they are."""
        return self.tape.value(x) if isinstance(x, Ref) else x

    def _known(self, ref: Ref) -> torch.Tensor:
        value = self.tape.value(ref)
        assert value is not None
        return value

    def is_const(self, ref: Any) -> bool:
        return isinstance(ref, Ref) and self.tape.tensors[ref.id].const and self.tape.value(ref) is not None

    def shape(self, ref: Ref) -> tuple[int, ...]:
        return self.tape.tensors[ref.id].shape

    # -- running the tape -------------------------------------------------------------------------
    def run(self) -> Any:
        from arspec.verification.rules import rule_for
        last_use = self.tape.last_uses()
        for index, entry in enumerate(self.tape.entries):
            outputs = [o for o in tree_flatten(entry.outputs)[0] if isinstance(o, Ref)]
            if not outputs:
                continue
            result = self._evaluate(entry, rule_for(entry.func), outputs)
            self._store(entry, result)
            for ref_id in last_use.get(index, ()):
                self.env.pop(ref_id, None)
        return tree_map(lambda r: self.get(r) if isinstance(r, Ref) else r, self.tape.output)

    def _evaluate(self, entry: Any, rule: Any, outputs: list[Ref]) -> Any:
        if entry.constant and not entry.func.is_view and all(self.tape.value(o) is not None for o in outputs):
            return tree_map(lambda r: self.from_value(self._known(r)) if isinstance(r, Ref) else r, entry.outputs)
        try:
            if rule is None:
                raise UnknownOp(entry.func._schema.name)
            result = rule(self, entry)
            shapes = [tuple(s.dep.shape) for s in tree_flatten(result)[0] if isinstance(s, Shadow)]
            if shapes != [self.shape(o) for o in outputs]:
                raise UnknownOp(f"{entry.func._schema.name} (its rule gave shapes {shapes}, the operation {[self.shape(o) for o in outputs]})")
            return result
        except UnknownOp as err:
            self.unknown.setdefault(str(err) or str(entry.func._schema.name), entry.where)
            return self._everything(entry)

    def _everything(self, entry: Any) -> Any:
        """The conservative rule: every output element reads every input element (per item, if
        the tensors share a leading batch axis, else all of them)."""
        inputs = [self.get(a).dep for a in tree_flatten((entry.args, entry.kwargs))[0] if isinstance(a, Ref)]
        total = torch.tensor(self.sr.none, dtype=torch.float64)
        for t in inputs:
            total = self.sr.plus(total, self.sr.reduce(t, tuple(range(t.dim()))))
        return tree_map(lambda r: self._filled(total, self.shape(r)) if isinstance(r, Ref) else r, entry.outputs)

    def _filled(self, value: torch.Tensor, shape: tuple[int, ...]) -> Shadow:
        none = self.none(shape)
        return Shadow(value.expand(shape).clone(), none.zero, none.ninf)

    def _store(self, entry: Any, result: Any) -> None:
        """New outputs take their shadows; arguments written in place have theirs overwritten (so
        that every view of them sees the write)."""
        flat_args = tree_flatten((entry.args, entry.kwargs))[0]
        schema_args = entry.func._schema.arguments
        written = {}
        for position in entry.writes:
            name = schema_args[position].name
            target = entry.args[position] if position < len(entry.args) else entry.kwargs.get(name)
            if isinstance(target, Ref):
                written[target.id] = target
        results = tree_flatten(result)[0]
        outputs = tree_flatten(entry.outputs)[0]
        for out, shadow in zip(outputs, results):
            if not isinstance(out, Ref) or not isinstance(shadow, Shadow):
                continue
            if out.id in written or (out.id in self.env and any(isinstance(a, Ref) and a.id == out.id for a in flat_args)):
                current = self.get(out)
                shadow = shadow.expand(current.dep.shape) if shadow.dep.shape != current.dep.shape else shadow
                self._write(current, shadow)
            else:
                self.env[out.id] = shadow

    @staticmethod
    def _write(current: Shadow, new: Shadow) -> None:
        current.dep.copy_(new.dep)
        current.zero.copy_(new.zero)
        current.ninf.copy_(new.ninf)
