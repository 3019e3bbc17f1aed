"""`arspec verify`'s report: one verdict line, then what leaks (the first element that reads its
own step or later, and how many do), batch coupling, blind spots, operations traced
conservatively, values that left for Python, the cache check; and the same as JSON."""
from __future__ import annotations

from typing import Any

import numpy as np

from arspec.verification.api import VerifyReport


def _at(report: VerifyReport, element: tuple[int, ...]) -> str:
    return f"{element} (step {int(report.layout.steps[element])})"


def text(report: VerifyReport, name: str) -> list[str]:
    layout = report.layout
    where = f"in {report.order} order (event {list(layout.shape)}, output {layout.pattern.text!r})"
    verdict = "autoregressive" if report.autoregressive else "NOT autoregressive"
    if report.autoregressive and report.cache is not None and not report.cache.agrees:
        verdict = "autoregressive, but its incremental path disagrees with the full pass"
    elif report.autoregressive and not report.ok:
        verdict = "autoregressive, but blind spots fail --strict"
    lines = [f"{name}: {verdict} {where}"]
    leak = report.first_leak()
    if leak is not None:
        mode = report.leaking
        assert mode is not None
        element, source = leak
        itself = ", itself" if element == source else ""
        modes = " and ".join(m.mode for m in report.modes if m.leaks)
        lines.append(f"  leak: element {_at(report, element)} reads {_at(report, source)}{itself}; {mode.leaks} of "
                     f"{int(np.prod(layout.shape))} elements read an element of their own step or later ({modes} mode)")
    for mode in report.modes:
        for coupling in mode.coupled[:1]:
            lines.append(f"  batch coupling ({mode.mode} mode): {coupling}: an item's output depends on the other items "
                         "(batch statistics, a mean over the batch)")
    blind = report.blind
    if blind is not None:
        scope = (f"{blind.of} elements (all of them)" if blind.looked_at == blind.of
                 else f"{blind.looked_at} elements spread over the order (of {blind.of}; --blind-spots all for every one)")
        if blind.affected and blind.example is not None:
            element, missed = blind.example
            lines.append(f"  {'error' if report.strict else 'warning'}: blind spots: {blind.affected} of the {scope} miss earlier elements "
                         f"inside the box of what they read; {_at(report, element)} misses {missed}")
        else:
            lines.append(f"  blind spots: none in the fields of the {scope}")
    unknown: dict[str, str] = {}
    notes: list[str] = []
    for mode in report.modes:
        unknown.update(mode.unknown)
        notes += [e for e in mode.escapes if e not in notes]
    for op, location in unknown.items():
        lines.append(f"  traced conservatively: {op} at {location} (no dependency rule: read as reading all of its inputs)")
    for note in notes[:5]:
        lines.append(f"  note: {note}: what the module does with it is not traced")
    for note in report.notes:
        lines.append(f"  note: {note}")
    if report.cache is not None:
        if report.cache.agrees:
            lines.append(f"  cache: the incremental path agrees with the full pass (float64, max difference {report.cache.max_difference:.1e})")
        else:
            first = _at(report, report.cache.first) if report.cache.first is not None else "?"
            lines.append(f"  cache: the incremental path differs from the full pass, first at element {first} "
                         f"(max difference {report.cache.max_difference:.3g})")
    lines.append(f"  every element checked, exactly (dependency tracer), in {report.seconds:.1f} s")
    return lines


def as_json(report: VerifyReport, name: str) -> dict[str, Any]:
    leak = report.first_leak()
    blind = report.blind
    return {
        "target": name, "ok": report.ok, "autoregressive": report.autoregressive, "order": report.order,
        "event_shape": list(report.layout.shape), "output": report.layout.pattern.text, "axes": list(report.layout.axes),
        "modes": [{"mode": m.mode, "leaking_elements": m.leaks, "batch_coupling": m.coupled, "traced_conservatively": m.unknown,
                   "values_read_into_python": m.escapes} for m in report.modes],
        "first_leak": None if leak is None else {"element": list(leak[0]), "reads": list(leak[1])},
        "blind_spots": None if blind is None else {"examined": blind.looked_at, "elements": blind.of, "affected": blind.affected,
                                                   "example": None if blind.example is None else {"element": list(blind.example[0]), "misses": blind.example[1]}},
        "cache": None if report.cache is None else {"agrees": report.cache.agrees, "max_difference": report.cache.max_difference,
                                                    "first": None if report.cache.first is None else list(report.cache.first)},
        "seconds": round(report.seconds, 3),
    }
