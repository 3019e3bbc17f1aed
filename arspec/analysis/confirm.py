"""Leaks found in the translation-equivariant offset domain, confirmed on the exact per-position
domain before they are reported: an example pair and a count must be real. Up to `EXACT_LIMIT`
elements the per-position scan is exhaustive (in chunks of columns, so memory stays bounded);
beyond, each example pair is checked on its own."""
from __future__ import annotations

import numpy as np

from arspec.analysis.propagate import concrete_data, propagate, term_deps
from arspec.domains import ConcreteDeps
from arspec.ir.graph import IRGraph

EXACT_LIMIT = 16384
CHUNK = 512


def exact_leaks(ir: IRGraph, mask: int, keep: int = 64) -> tuple[list[tuple[int, int]], int]:
    """Every leaking (target, source) pair of the per-position domain: up to `keep` examples, spread
    over the sources, and the number of elements that read an element not generated before them."""
    ctx = ir.ctx
    order = ctx.order(mask)
    affected = np.zeros(ctx.elements, dtype=bool)
    pairs: list[tuple[int, int]] = []
    for start in range(0, ctx.elements, CHUNK):
        columns = np.arange(start, min(ctx.elements, start + CHUNK))
        terms = term_deps(ir, propagate(ir, concrete_data(ir, columns), mask))
        assert isinstance(terms, ConcreteDeps)
        table = terms.element_table(ctx.groups, ctx.params_per_element, ir.dense_output)
        leak = table & (order[columns][None, :] >= order[:, None])
        if leak.any():
            affected |= leak.any(axis=1)
            found = np.argwhere(leak)
            pairs += [(int(t), int(columns[j])) for t, j in found[:: max(1, len(found) // 8)][:8]]
    return pairs[:keep], int(affected.sum())


def pair_leaks(ir: IRGraph, target: int, source: int, mask: int) -> bool:
    """Whether `target`'s term really reads `source` (one column of the per-position domain)."""
    ctx = ir.ctx
    terms = term_deps(ir, propagate(ir, concrete_data(ir, np.array([source])), mask))
    assert isinstance(terms, ConcreteDeps)
    return bool(terms.element_table(ctx.groups, ctx.params_per_element, ir.dense_output)[target, 0])


def confirmed(ir: IRGraph, pairs: list[tuple[int, int]], affected: int, mask: int) -> tuple[list[tuple[int, int]], int, bool]:
    """(pairs, affected, exact): the offset domain's leak report checked per position. Small events
    are rescanned exhaustively (no pairs: there is no leak); for large ones the examples that do not
    hold are dropped, and if none holds the report stands, marked as not confirmed."""
    if ir.ctx.elements <= EXACT_LIMIT:
        found, count = exact_leaks(ir, mask)
        return found, count, True
    real = [(t, s) for t, s in pairs if pair_leaks(ir, t, s, mask)]
    return (real, affected, True) if real else (pairs, affected, False)
