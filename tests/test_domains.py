"""The two exact dependency domains agree: the translation-equivariant offset sets (used for large
raster events) give every interior element exactly the per-position sets, and at the borders
they only ever add reads that fall outside the image or are cut by padding, never drop one."""
from __future__ import annotations

import re

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arspec.analysis.propagate import concrete_data, offset_data, propagate, term_deps
from tests.helpers import spec_from
from tests.strategies import causal_sequences, examples, gated_stacks, masked_conv_stacks, multiscale_pyramids, recurrent_stacks

DOMAINS = settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _reach(ir) -> int | None:
    """How far (per axis) any path may wander from the element it serves: the sum of every call's
    largest live tap offset; None for recurrences (not position-local), whose reach is the whole image."""
    total, rank = 0, len(ir.ctx.spatial)
    for node in ir.op_nodes():
        for call in node.program.calls:
            taps = call.primitive.taps(rank, len(call.args))
            if taps is None:
                return None
            total += max((abs(v) for t in taps for off, live in zip(t.offsets, t.live) if live for v in off), default=0)
    return total


def assert_domains_agree(text: str) -> None:
    """Per-position sets never exceed the offset sets; with no recurrence, the model is also
    analysed on an event large enough to have elements whose every path stays inside, and there
    both domains must give exactly the same set."""
    small = spec_from(text)
    reach = _reach(small.ir)
    spatial = small.ir.ctx.spatial
    side = 2 * reach + 1 if reach is not None else None
    if side is not None and side ** len(spatial) * small.ir.ctx.groups <= 1500:
        shape = [side] if len(small.event.shape) == 1 else [small.ir.ctx.groups] + [side] * len(spatial)
        spec = spec_from(text, [f"event.shape={shape}"])
    else:
        spec, reach = small, None
    ir, ctx = spec.ir, spec.ir.ctx
    concrete = term_deps(ir, propagate(ir, concrete_data(ir))).element_table(ctx.groups, ctx.params_per_element, False)
    offsets = term_deps(ir, propagate(ir, offset_data(ir)))
    table = offsets.element_offsets(ctx.groups, ctx.params_per_element)
    claimed = offset_reads(table, np.array(offsets.origin), offsets.fold, ctx.event, np.arange(ctx.elements))
    missed = np.argwhere(concrete & ~claimed)
    assert not len(missed), f"the offset domain misses (element, source) {missed[:5].tolist()}"
    if reach is not None:
        pos = np.stack(np.unravel_index(np.arange(ctx.elements), ctx.event)[1:])
        interior = np.all((pos >= reach) & (pos + reach < np.array(ctx.spatial)[:, None]), axis=0)
        assert interior.any()
        over = np.argwhere(claimed[interior] & ~concrete[interior])
        assert not len(over), f"interior elements: offsets claim reads that do not happen {over[:5].tolist()}"


@DOMAINS
@given(masked_conv_stacks())
def test_masked_stacks_offsets_equal_per_position_sets_inside(text):
    assert_domains_agree(text)


@DOMAINS
@given(gated_stacks())
def test_gated_stacks_offsets_equal_per_position_sets_inside(text):
    assert_domains_agree(text)


@DOMAINS
@given(causal_sequences())
def test_causal_sequences_offsets_equal_per_position_sets_inside(text):
    assert_domains_agree(text)


@DOMAINS
@given(recurrent_stacks())
def test_recurrences_offsets_equal_per_position_sets_inside(text):
    assert_domains_agree(text)


@DOMAINS
@given(masked_conv_stacks(coupled="pixel"))
def test_coupled_likelihood_offsets_equal_per_position_sets_inside(text):
    assert_domains_agree(text)


def offset_reads(table: np.ndarray, origin: np.ndarray, fold: int, event: tuple[int, ...], columns: np.ndarray) -> np.ndarray:
    """(E, len(columns)) from offset tables (G, fold^d, *box, C): does element e read column j?
    Vectorised over e."""
    box = np.array(table.shape[2:-1])
    g, *pos = np.unravel_index(np.arange(int(np.prod(event))), event)
    pos = np.stack(pos)                                            # (d, E)
    phase = pos % fold
    flat_phase = np.ravel_multi_index(tuple(phase), (fold,) * len(pos))
    out = np.zeros((pos.shape[1], len(columns)), dtype=bool)
    for k, j in enumerate(columns):
        c, *pj = np.unravel_index(int(j), event)
        b = np.array(pj)[:, None] - (pos - phase) + origin[:, None]
        inside = np.all((b >= 0) & (b < box[:, None]), axis=0)
        idx = (g[inside], flat_phase[inside], *b[:, inside], np.full(inside.sum(), c))
        out[inside, k] = table[idx]
    return out


def _report_reads(report, columns: np.ndarray) -> np.ndarray:
    event = (report.offsets.shape[0],) + tuple(report.order.shape[1:])
    return offset_reads(report.offsets, np.array(report.offset_origin), report.offset_fold, event, columns)


def _both_domains(text: str, overrides=()):
    import arspec.analysis.report as report_module
    spec = spec_from(text, overrides)
    saved = report_module.CONCRETE_LIMIT
    try:
        report_module.CONCRETE_LIMIT = 0                  # force the offset domain
        offsets = report_module.analyze(spec)
        report_module.CONCRETE_LIMIT = report_module.CONCRETE_MAX
        concrete = report_module.analyze(spec)
    finally:
        report_module.CONCRETE_LIMIT = saved
    return spec, offsets, concrete


@DOMAINS
@given(st.sampled_from(["ok", "first_mask", "keep", "merge", "post_1x1", "post_3x3"]).flatmap(
    lambda bug: multiscale_pyramids(**{"ok": {}, "first_mask": {"first_mask": "B"}, "keep": {"keep": "[2, 1, 3]"},
                                       "merge": {"coarse_first": False}, "post_1x1": {"post": "1x1"},
                                       "post_3x3": {"post": "3x3"}}[bug])))
def test_multiscale_pyramids_get_the_same_verdict_in_both_domains(text):
    spec, offsets, concrete = _both_domains(text)
    assert offsets.domain == "offsets" and concrete.domain == "concrete"
    assert offsets.ok == concrete.ok, (offsets.errors, concrete.errors)
    affected = [{re.search(r"\((\d+) element\(s\) affected\)", e.message).group(1) for e in r.errors if "leak" in e.message}
                for r in (offsets, concrete)]
    assert affected[0] == affected[1]                  # the same number of leaking elements, counted per class
    if concrete.ok:
        columns = np.arange(spec.ir.ctx.elements)
        assert not (concrete.dependencies & ~_report_reads(offsets, columns)).any()   # borders only remove


def test_multiscale_zoo_model_domains_agree_on_interior_elements():
    spec, offsets, concrete = _both_domains(open("specs/multiscale_pixelcnn.yaml").read(), ["event.shape=[1,56,56]", "ordering.base=14"])
    assert offsets.ok and concrete.ok
    columns = np.arange(spec.ir.ctx.elements)
    claimed = _report_reads(offsets, columns)
    assert not (concrete.dependencies & ~claimed).any()
    pos = np.stack(np.unravel_index(columns, (1, 56, 56))[1:])
    centre = np.all((pos >= 20) & (pos < 36), axis=0)            # every phase class, away from the borders
    assert np.array_equal(concrete.dependencies[centre], claimed[centre])
