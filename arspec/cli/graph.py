"""`arspec graph`: the receptive field of an element, channel by channel, and the op graph as a PNG;
leaking specs are drawn with the leaking elements and the culprit edge in red."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from arspec.errors import UsageError


def _element(asked: tuple[int, ...] | None, report) -> tuple[int, ...]:
    """The element to draw, in the event's own shape ([T] events take one index)."""
    from arspec.graph_figure import default_element
    if asked is None:
        return default_element(report)
    shape = tuple(report.event_shape)
    if len(asked) != len(shape) or any(not 0 <= v < s for v, s in zip(asked, shape)):
        example = ",".join(str(s // 2) for s in shape)
        raise UsageError(f"--element {','.join(map(str, asked))}: expected {len(shape)} index(es) inside the event {list(shape)}, e.g. {example}")
    return asked


def run(args) -> int:
    from arspec import analyze, load_spec
    from arspec.analysis.report import element_name
    from arspec.composite.models import CompositeSpec
    from arspec.graph_figure import draw_graph_figure, internal_index, internal_shape
    spec = load_spec(args.spec, overrides=args.overrides)
    report = analyze(spec)
    failed = bool(report.errors)
    if isinstance(spec, CompositeSpec):       # the autoregressive part: the decoder (z a context input), or the first flow
        for problem in report.errors:
            print(problem, file=sys.stderr)
        spec, report = spec.decoder, report.decoder
    for problem in report.errors:
        print(problem, file=sys.stderr)
    if report.errors and not report.leaks:
        print("arspec graph: nothing to draw until these errors are fixed", file=sys.stderr)
        return 1
    element = _element(args.element, report)
    if report.agnostic:
        report = in_raster_order(spec, report, element)
    draw_graph_figure(Path(args.output), spec, report, element, fold=not args.unfold)
    shape = internal_shape(report.event_shape)
    flat = int(np.ravel_multi_index(internal_index(element, tuple(report.event_shape)), shape))
    name = element_name(flat, shape, tuple(report.event_shape))
    verdict = "; the leak is drawn in red" if report.leaks else ""
    reads = f"element {name} reads {len(report.dependency_set(flat))} elements"
    if report.agnostic:
        reads = f"order-agnostic, x only through {', '.join(report.agnostic['gates'])}; in raster order {reads}"
    print(f"wrote {args.output}: {reads}; op graph of {len(spec.ir.op_nodes())} ops{verdict}")
    return 1 if report.errors or failed else 0


def in_raster_order(spec, report, element: tuple[int, ...]):
    """An order-agnostic model's report as seen in raster order (its first evaluation ordering):
    the element's receptive field when exactly the elements before it are observed."""
    import copy

    from arspec.analysis.propagate import concrete_data, propagate
    from arspec.graph_figure import internal_index, internal_shape
    from arspec.ordering import compute_raster, to_user_layout
    from arspec.primitives.observe import given_elements
    ir = spec.ir
    shape = internal_shape(report.event_shape)
    flat = int(np.ravel_multi_index(internal_index(element, tuple(report.event_shape)), shape))
    order = compute_raster(ir.ctx.event)
    with given_elements(order < order[flat]):
        table = propagate(ir, concrete_data(ir))[ir.output].element_table(ir.ctx.groups, ir.ctx.params_per_element, ir.dense_output)
    view = copy.copy(report)
    view.order = to_user_layout(order, tuple(report.event_shape))
    view.dependencies = np.zeros((len(order), len(order)), dtype=bool)
    view.dependencies[flat] = table[flat]
    return view
