"""`analyze(spec)`: the static verdict — order, dependency sets, leaks, blind spots, conditioning
leaks, dead context and receptive fields — with no backend involved."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from arspec.analysis.propagate import concrete_data, offset_data, propagate, term_deps
from arspec.domains import ConcreteDeps, NotTranslationEquivariant, OffsetDeps
from arspec.errors import Location, Problem
from arspec.ir.graph import IRGraph
from arspec.ordering import internal_event, order_period, to_user_layout

CONCRETE_LIMIT = 2048          # events up to this many elements are analysed position by position
CONCRETE_MAX = 16384           # beyond this, only translation-equivariant models can be analysed


@dataclass
class Report:
    """What `analyze` found. `ok` means no errors (warnings allowed)."""

    name: str
    domain: str
    order: np.ndarray                                  # event-shaped steps (mask 0)
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    leaks: list[dict[str, Any]] = field(default_factory=list)  # per culprit: target, source, culprit, via, route
    dependencies: np.ndarray | None = None             # (E, E) concrete: element e reads e'
    offsets: np.ndarray | None = None                  # (G, fold^d, *box, C) offset domain, mask 0
    offset_origin: tuple[int, ...] | None = None
    offset_fold: int = 1
    offset_period: int = 1                             # position classes the offset checks used
    receptive_field: dict[str, Any] = field(default_factory=dict)
    blind_spot: dict[str, Any] = field(default_factory=dict)
    agnostic: dict[str, Any] = field(default_factory=dict)   # order-agnostic: the observe gates and mask inputs
    parameters: int = 0
    seconds: float = 0.0
    event_shape: tuple[int, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.errors

    def dependency_set(self, element: int) -> set[int]:
        """Flat indices (over the event) of the elements whose values element `element`'s term reads."""
        if self.dependencies is not None:
            return set(np.nonzero(self.dependencies[element])[0].tolist())
        assert self.offsets is not None and self.offset_origin is not None
        event = internal_event(self.event_shape)
        c, *pos = np.unravel_index(element, event)
        phase = tuple(int(q) % self.offset_fold for q in pos)
        table = self.offsets[c, int(np.ravel_multi_index(phase, (self.offset_fold,) * len(pos)))]
        out = set()
        for idx in zip(*np.nonzero(table)):
            *rel, ch = idx
            p = [q - f + r - o for q, f, r, o in zip(pos, phase, rel, self.offset_origin)]
            if all(0 <= v < s for v, s in zip(p, event[1:])):
                out.add(int(np.ravel_multi_index((ch, *p), event)))
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "domain": self.domain,
            "parameters": self.parameters,
            "errors": [_problem_json(p) for p in self.errors],
            "warnings": [_problem_json(p) for p in self.warnings],
            "leaks": self.leaks,
            "receptive_field": self.receptive_field,
            "blind_spot": self.blind_spot,
            **({"agnostic": self.agnostic} if self.agnostic else {}),
            "analysis_seconds": round(self.seconds, 4),
        }


def _problem_json(p: Problem) -> dict[str, Any]:
    return {"file": p.location.file, "line": p.location.line, "column": p.location.column, "path": p.path, "message": p.message}


def element_name(flat: int, event: tuple[int, ...], user_shape: tuple[int, ...]) -> str:
    """A readable element index in the user's event shape, e.g. (0, 3, 5), t=17 or, in a video,
    frame 2 (c=0, y=3, x=5)."""
    idx = np.unravel_index(flat, event)
    if len(user_shape) == 1:
        return f"t={idx[1]}"
    if len(user_shape) == 4:
        c, t, y, x = (int(i) for i in idx)
        return f"frame {t} (c={c}, y={y}, x={x})"
    return "(" + ", ".join(str(int(i)) for i in idx) + ")"


def analyze(spec, mask: int | None = None) -> Report:
    """Statically verify a spec (a ModelSpec from load_spec/parse_spec; a spec of several parts
    gets an `arspec.composite.verify.CompositeReport`)."""
    from arspec.analysis import checks
    from arspec.composite.models import CompositeSpec
    if isinstance(spec, CompositeSpec):
        from arspec.composite.verify import analyze_composite
        return analyze_composite(spec)  # type: ignore[return-value]

    start = time.perf_counter()
    ir: IRGraph = spec.ir
    ctx = ir.ctx
    user_shape = tuple(spec.event.shape)
    report = Report(spec.name, "", to_user_layout(ctx.order(0), user_shape), parameters=ir.parameters, event_shape=user_shape)
    masks = range(ctx.masks) if mask is None else [mask]
    use_offsets = (ctx.elements > CONCRETE_LIMIT and not ir.dense_output
                   and all(order_period(o, ctx.event) is not None for o in spec.orderings))
    checks.unused_nodes(ir, report)
    for m in masks:
        final = None
        if use_offsets:
            try:
                deps = propagate(ir, offset_data(ir), m)
                report.domain = "offsets"
                final = deps
            except NotTranslationEquivariant:
                final = None
        if final is None:
            if ctx.elements > CONCRETE_MAX:
                report.errors.append(Problem(Location(spec.filename, 1, 1), "graph",
                                             f"exact analysis of this model needs the concrete domain, but its event has {ctx.elements:,} elements (limit {CONCRETE_MAX:,}); analyse it at a smaller size with --set event.shape=..."))
                break
            deps = propagate(ir, concrete_data(ir), m)
            report.domain = "concrete"
        checks.conditioning_leaks(spec, ir, deps, report)
        if report.errors:
            break
        terms = term_deps(ir, deps)
        if isinstance(terms, OffsetDeps):
            checks.offset_checks(spec, ir, terms, report, m, deps)
        else:
            assert isinstance(terms, ConcreteDeps)
            checks.concrete_checks(spec, ir, terms, report, m, deps)
        if report.errors:
            break
    if ctx.agnostic and not report.errors:
        checks.agnostic_checks(ir, report)
    report.seconds = time.perf_counter() - start
    return report
