"""`arspec graph`: the receptive field of an element on the grid and the op graph, as a PNG."""
from __future__ import annotations

import sys
from pathlib import Path


def _element(text: str | None, event: tuple[int, ...]) -> tuple[int, ...]:
    if not text:
        return (0,) + tuple(s // 2 for s in event[1:])
    values = tuple(int(v) for v in text.split(","))
    if len(values) == 1 and len(event) == 2:
        values = (0,) + values
    if len(values) != len(event) or any(not 0 <= v < s for v, s in zip(values, event)):
        raise ValueError(f"element {text} is outside the event {list(event)}")
    return values


def run(args) -> int:
    from arspec import analyze, load_spec
    from arspec.pictures import draw_graph_figure
    spec = load_spec(args.spec, overrides=args.overrides)
    report = analyze(spec)
    if not report.ok:
        for e in report.errors:
            print(e, file=sys.stderr)
        print("(the receptive field is drawn only for autoregressive specs)", file=sys.stderr)
        return 1
    event = spec.ir.ctx.event
    try:
        element = _element(args.element, event)
    except ValueError as err:
        print(f"arspec graph: {err}", file=sys.stderr)
        return 2
    draw_graph_figure(Path(args.output), spec, report, element)
    seen = len(report.dependency_set(int(__import__("numpy").ravel_multi_index(element, event))))
    print(f"wrote {args.output}: element {element} sees {seen} elements; op graph of {len(spec.ir.op_nodes())} ops")
    return 0
