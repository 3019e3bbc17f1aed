"""Rewrites of the interpreter's call list that lower the cost of a whole-tensor pass and keep every
value (up to float rounding). The cached samplers read the plan's own calls, never these.

Two rewrites. A local context that is repeat-upsampled and then projected in every gate (WaveNet's
log-mel features, Parallel WaveNet's flows) is projected at its own rate instead, and added to the
gate's pre-activation by broadcasting, so the audio-rate projection (a matmul at 16 kHz per layer)
and the audio-rate copy of it never exist: a projection commutes with repetition because it is the
same linear map at every position. And a sum of many values (WaveNet's 30 skip outputs) becomes a
running sum, each term added as soon as it exists, as hand-written code does (`skip = skip + s`):
the terms are not all alive at once."""
from __future__ import annotations

from dataclasses import replace

from arspec_torch.cache import StepCall


def readers_of(calls: list[StepCall]) -> dict[str, list[StepCall]]:
    """The calls that read each value, by value id."""
    out: dict[str, list[StepCall]] = {}
    for c in calls:
        for a in c.args:
            out.setdefault(a, []).append(c)
    return out


def project_before_repeat(calls: list[StepCall], kept: set[str]) -> list[StepCall]:
    """`add(h, context_projection(upsample_repeat(c)))` -> `add_repeated(h, context_projection(c))`.
    A projection qualifies when it reads a repeat-upsampling, is not kept, and only additions that
    also read a full-resolution value read it; an upsampling left without readers is dropped."""
    by_id = {c.id: c for c in calls}
    readers = readers_of(calls)
    candidates: dict[str, int] = {}
    for c in calls:
        source = by_id.get(c.args[0]) if c.kind == "context_projection" and len(c.args) == 1 else None
        if (source is not None and c.attrs.get("local") and source.kind == "upsample"
                and source.attrs.get("mode") == "repeat" and c.id not in kept):
            candidates[c.id] = int(source.attrs["factor"])

    def full_rate_sum(r: StepCall) -> bool:
        return r.kind == "add" and any(a not in candidates for a in r.args)

    factor = {p: f for p, f in candidates.items() if readers.get(p) and all(full_rate_sum(r) for r in readers[p])}
    if not factor:
        return calls
    rewritten = []
    for c in calls:
        if c.id in factor:
            c = replace(c, args=by_id[c.args[0]].args)
        elif c.kind == "add" and any(a in factor for a in c.args):
            c = replace(c, kind="add_repeated", attrs={**c.attrs, "factors": tuple(factor.get(a, 1) for a in c.args)})
        rewritten.append(c)
    return drop_unread(rewritten, kept)


def drop_unread(calls: list[StepCall], kept: set[str]) -> list[StepCall]:
    """The calls whose values are read by a later call or kept (a rewrite may orphan some)."""
    live = set(kept)
    out = []
    for c in reversed(calls):
        if c.id in live:
            out.append(c)
            live.update(c.args)
    return out[::-1]


def running_sum_terms(ids: list[str], sums: dict[str, tuple[str, ...]]) -> dict[str, list[tuple[str, int]]]:
    """Which sums run as running sums, and in what order: an addition of three distinct values or
    more (`sums`: by id, its terms), its terms sorted by the index in `ids` of what makes them
    (-1: made before the first), each with that index. The interpreter's rewrite below and the
    exporter's forward both follow this one rule."""
    made = {name: i for i, name in enumerate(ids)}
    return {total: sorted(((a, made.get(a, -1)) for a in terms), key=lambda term: term[1])
            for total, terms in sums.items() if len(terms) >= 3 and len(set(terms)) == len(terms)}


def running_sums(calls: list[StepCall]) -> list[StepCall]:
    """An `add` of three values or more -> binary adds, each right after the later of its two terms
    is computed (the last one keeps the sum's id). Terms are added in the order they appear, so the
    sum is the same up to float rounding; each term can be dropped once it is added."""
    by_id = {c.id: c for c in calls}
    running = running_sum_terms([c.id for c in calls], {c.id: c.args for c in calls if c.kind == "add"})
    inserted: dict[int, list[StepCall]] = {}
    for sum_id, terms in running.items():
        total = terms[0][0]
        for k, (term, at) in enumerate(terms[1:], start=1):
            last = k == len(terms) - 1
            step = replace(by_id[sum_id], id=sum_id if last else f"{sum_id}__sum{k}", args=(total, term), step=None)   # whole-tensor only: the step engines read the plan's own calls
            inserted.setdefault(at, []).append(step)
            total = step.id
    if not running:
        return calls
    out = [step for step in inserted.get(-1, [])]
    for i, c in enumerate(calls):
        if c.id not in running:
            out.append(c)
        out.extend(inserted.get(i, []))
    return out


def fuse(calls: list[StepCall], kept: set[str]) -> list[StepCall]:
    """Every rewrite of this module, in order."""
    return running_sums(project_before_repeat(calls, kept))
