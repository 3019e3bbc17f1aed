"""Errors as data: every problem found in a spec carries its source location and field path."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Location:
    """A place in a spec's source text (1-based line and column)."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Problem:
    """One located problem: where, which field (dotted path), and what is wrong."""

    location: Location
    path: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.location}: {where}{self.message}"

    def in_part(self, prefix: str) -> Problem:
        """The same problem found inside a part of a larger spec: its field path under `prefix`."""
        return Problem(self.location, f"{prefix}.{self.path}" if self.path else prefix, self.message, self.severity)


@dataclass
class SpecError(Exception):
    """An invalid spec. Carries every problem found, not only the first."""

    problems: list[Problem] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


class Problems:
    """Collects problems during a pass and raises them once, at the boundary."""

    def __init__(self) -> None:
        self.items: list[Problem] = []

    def add(self, location: Location, path: str, message: str) -> None:
        problem = Problem(location, path, message)
        if problem not in self.items:
            self.items.append(problem)

    def raise_if_any(self) -> None:
        if self.items:
            raise SpecError(sorted(self.items, key=lambda p: (p.location.file, p.location.line, p.location.column)))

    def __bool__(self) -> bool:
        return bool(self.items)


class UsageError(ValueError):
    """A command-line input that cannot be used (a file of the wrong shape, a missing context value);
    reported as one line, exit code 2."""
