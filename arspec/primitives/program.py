"""The semantics of one IR node: a straight-line program of primitive calls.

An op writes its semantics with a `ProgramBuilder` (`b.call(name, primitive, *args)`); lowering
adds what every node may have (conditioning projections, the activation, the residual). Backends
execute programs, the analysis propagates dependency sets through them, and cached generation
reads their taps — one description, every consumer."""
from __future__ import annotations

from dataclasses import dataclass, field

from arspec.primitives.base import Primitive
from arspec.types import TensorType


@dataclass(frozen=True)
class Value:
    """A tensor inside a program: a node input or the result of a call."""

    name: str
    type: TensorType


@dataclass
class Call:
    """One primitive applied to values of the program; `name` is unique within its node."""

    name: str
    primitive: Primitive
    args: tuple[str, ...]
    type: TensorType
    arg_types: tuple[TensorType, ...] = ()


@dataclass
class Program:
    """`inputs` are bound, in order, to the node's inputs (main inputs, op extras, conditions, residual)."""

    inputs: tuple[str, ...]
    calls: list[Call] = field(default_factory=list)
    output: str = ""
    output_type: TensorType | None = None

    @property
    def parameters(self) -> int:
        return sum(c.primitive.parameter_count for c in self.calls)


class ProgramError(ValueError):
    """A primitive cannot take the values it was given (an op's semantics is inconsistent)."""


class ProgramBuilder:
    """Collects the calls of one node's program."""

    def __init__(self, inputs: list[Value]) -> None:
        self.program = Program(tuple(v.name for v in inputs))
        self._names = {v.name for v in inputs}

    def call(self, name: str, primitive: Primitive, *args: Value) -> Value:
        """Apply `primitive` to `args`; returns the result (named `name`, made unique)."""
        n = len(args)
        if n < primitive.min_args or (primitive.max_args is not None and n > primitive.max_args):
            raise ProgramError(f"primitive {primitive.kind} cannot take {n} argument(s)")
        unique, k = name, 1
        while unique in self._names:
            k += 1
            unique = f"{name}{k}"
        self._names.add(unique)
        out = primitive.out_type([a.type for a in args])
        self.program.calls.append(Call(unique, primitive, tuple(a.name for a in args), out, tuple(a.type for a in args)))
        return Value(unique, out)

    def finish(self, output: Value) -> Program:
        self.program.output = output.name
        self.program.output_type = output.type
        return self.program
