"""Rewrites of the interpreter's call list that lower the cost of a whole-tensor pass and keep every
value (up to float rounding). The cached samplers read the plan's own calls, never these.

One rewrite today: a local context that is repeat-upsampled and then projected in every gate
(WaveNet's log-mel features, Parallel WaveNet's flows) is projected at its own rate instead, and
added to the gate's pre-activation by broadcasting, so the audio-rate projection (a matmul at
16 kHz per layer) and the audio-rate copy of it never exist. A projection commutes with repetition
because it is the same linear map at every position."""
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


def fuse(calls: list[StepCall], kept: set[str]) -> list[StepCall]:
    """Every rewrite of this module, in order."""
    return project_before_repeat(calls, kept)
