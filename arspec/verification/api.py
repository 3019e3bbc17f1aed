"""`arspec.verify(module, ...)`: prove that a hand-written PyTorch module is autoregressive in a
given order, find batch coupling, blind spots, and check an incremental sampler against the full
pass. See docs/verify.md."""
from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from arspec.verification.analysis import (
    BlindSpots,
    Layout,
    ModeResult,
    OutputError,
    blind_spots,
    check_mode,
    fields,
    output_ref,
    sample_elements,
)
from arspec.verification.orders import event_steps
from arspec.verification.pattern import BATCH, PARAMS, PatternError, parse_pattern, to_elements
from arspec.verification.tape import Tape, record

DEFAULT_AXES = {1: "t", 2: "c t", 3: "c h w", 4: "t c h w"}
BLIND_SPOT_SAMPLE = 64
AUTO_BLIND_SPOTS = 4096
BATCH_SIZE = 2


class VerifyError(ValueError):
    """Inputs that cannot be verified as given (a bad shape, pattern, order or input kind)."""


@dataclass
class CacheCheck:
    """The incremental sampler, teacher-forced, against the full pass (float64)."""

    agrees: bool
    max_difference: float
    first: tuple[int, ...] | None = None


@dataclass
class VerifyReport:
    """Everything `arspec verify` found. `ok`: autoregressive, no batch coupling, the cache (if
    given) agreeing, and under `strict` no blind spots."""

    layout: Layout
    order: str
    modes: list[ModeResult]
    blind: BlindSpots | None
    cache: CacheCheck | None
    strict: bool
    seconds: float
    field_element: tuple[int, ...] | None = None
    dependency_field: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def leaking(self) -> ModeResult | None:
        return next((m for m in self.modes if m.leaks), None)

    @property
    def coupled(self) -> ModeResult | None:
        return next((m for m in self.modes if m.coupled), None)

    @property
    def autoregressive(self) -> bool:
        """No element reads its own step or later, and no item reads another item."""
        return self.leaking is None and self.coupled is None

    @property
    def ok(self) -> bool:
        return (self.autoregressive and (self.cache is None or self.cache.agrees)
                and not (self.strict and self.blind is not None and self.blind.affected))

    def first_leak(self) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
        """The earliest element (in the order) that reads an element of its own step or later, and
        the latest element it reads."""
        mode = self.leaking
        if mode is None:
            return None
        steps = self.layout.steps
        candidates = np.argwhere(mode.leaking)
        element = tuple(int(i) for i in min(candidates, key=lambda e: steps[tuple(e)]))
        latest = mode.latest[element]
        source = np.argwhere(steps == latest)
        return element, tuple(int(i) for i in (source[0] if len(source) else element))


def make_input(kind: str, shape: tuple[int, ...], batch: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Random items of the event: binary (0/1 as floats), categorical:K (class indices) or real."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "binary":
        return torch.randint(0, 2, (batch, *shape), generator=gen).to(dtype)
    if kind.startswith("categorical:"):
        try:
            classes = int(kind.split(":", 1)[1])
        except ValueError:
            classes = 0
        if classes < 2:
            raise VerifyError(f"--input {kind}: expected categorical:K with K at least 2")
        return torch.randint(0, classes, (batch, *shape), generator=gen)
    if kind == "real":
        return torch.randn((batch, *shape), generator=gen).to(dtype)
    raise VerifyError(f"--input: expected binary, categorical:K or real, got {kind!r}")


def _dtype_of(module: torch.nn.Module) -> torch.dtype:
    return next((p.dtype for p in module.parameters() if p.dtype.is_floating_point), torch.float32)


def layout_for(event_shape: tuple[int, ...], output: str | None, order: str, event_axes: str | None, out_shape: tuple[int, ...] | None) -> Layout:
    """The pattern (given, or guessed from the output's shape: (B, *event) or (B, *event, K)), the
    event's axis names and each element's step."""
    rank = len(event_shape)
    if output is None:
        names = event_axes or DEFAULT_AXES.get(rank, " ".join(f"e{i}" for i in range(rank)))
        if out_shape is not None and tuple(out_shape[1:]) == tuple(event_shape):
            output = f"{BATCH} {names}"
        elif out_shape is not None and tuple(out_shape[1:-1]) == tuple(event_shape):
            output = f"{BATCH} {names} {PARAMS}"
        else:
            raise VerifyError(f"the output has shape {list(out_shape or ())}: name its axes with --output (e.g. \"b (k c) h w\")")
    try:
        pattern = parse_pattern(output)
    except PatternError as err:
        raise VerifyError(f"--output: {err}") from None
    axes = tuple(event_axes.split()) if event_axes else pattern.event_axes
    if len(axes) != rank or sorted(axes) != sorted(pattern.event_axes):
        raise VerifyError(f"--output {output!r} names the event axes {list(pattern.event_axes)}, the event has {rank} axes {list(event_shape)}"
                          + (" (and --event-axes must name the same letters)" if event_axes else ""))
    try:
        steps = event_steps(order, tuple(event_shape))
    except ValueError as err:
        raise VerifyError(str(err)) from None
    return Layout(pattern, axes, tuple(event_shape), steps)


def verify(module: torch.nn.Module, event_shape: tuple[int, ...] | list[int], input: str = "binary", output: str | None = None,
           order: str = "raster", strict: bool = False, mode: str = "both", step: Callable[..., Any] | None = None,
           event_axes: str | None = None, blind: str = "auto", seed: int = 0, picture: bool = False,
           max_memory: int | None = None) -> VerifyReport:
    """Verify `module` (see the module docstring). `mode`: eval, train or both; `blind`: none,
    sample (the fields of 64 elements spread over the order), all, or auto (sample for events of
    up to 4,096 elements, else none: each field costs a backward pass); `picture`: also compute the
    field of the first leaking element (else the centre one) for `arspec verify --picture`;
    `max_memory`: bytes one batched backward of the fields may use (default: the process's
    budget, `arspec.resources.memory_budget()`)."""
    start = time.perf_counter()
    shape = tuple(int(s) for s in event_shape)
    if not shape or any(s < 1 for s in shape):
        raise VerifyError(f"--event-shape: expected positive sizes, got {list(shape)}")
    if mode not in ("eval", "train", "both"):
        raise VerifyError(f"--mode: expected eval, train or both, got {mode!r}")
    if blind not in ("auto", "none", "sample", "all"):
        raise VerifyError(f"--blind-spots: expected auto, none, sample or all, got {blind!r}")
    x = make_input(input, shape, BATCH_SIZE, _dtype_of(module), seed)
    results: list[ModeResult] = []
    layout: Layout | None = None
    notes: list[str] = []
    eval_tape = None
    for which in (["eval", "train"] if mode == "both" else [mode]):
        tape = _recorded(module, x, which, seed)
        if layout is None:
            layout = layout_for(shape, output, order, event_axes, tape.tensors[output_ref(tape).id].shape)
        try:
            results.append(check_mode(which, tape, layout, BATCH_SIZE))
        except OutputError as err:
            raise VerifyError(str(err)) from None
        if which == "eval":
            eval_tape = tape
    assert layout is not None
    field_mode = "eval" if eval_tape is not None else "train"
    tape = eval_tape or tape
    report = VerifyReport(layout, order, results, None, None, strict, 0.0, notes=notes)
    leak = report.first_leak()
    if blind == "auto":
        blind = "sample" if int(np.prod(shape)) <= AUTO_BLIND_SPOTS else "none"
        if blind == "none":
            notes.append(f"blind spots not looked for: the event has more than {AUTO_BLIND_SPOTS:,} elements (--blind-spots sample or all)")
    chosen = sample_elements(layout, BLIND_SPOT_SAMPLE if blind == "sample" else int(np.prod(shape))) if blind != "none" else []
    drawn = [leak[0] if leak else tuple(s // 2 for s in shape)] if picture else []
    found = np.zeros((0, *shape), dtype=bool)
    if chosen or drawn:
        one = _one_item_tape(module, x, field_mode, seed)
        found = fields(one or tape, layout, 1 if one else BATCH_SIZE, [*chosen, *drawn], budget=max_memory)
    if blind != "none":
        report.blind = blind_spots(layout, chosen, found[:len(chosen)])
    if drawn:
        report.field_element, report.dependency_field = drawn[0], found[-1]
    if step is not None:
        report.cache = check_cache(module, step, x, layout)
    report.seconds = time.perf_counter() - start
    return report


def _recorded(module: torch.nn.Module, x: torch.Tensor, mode: str, seed: int) -> Tape:
    """One pass of a copy of `module` in `mode` (eval or train) on x, recorded, the random draws
    seeded so every pass of one check draws the same."""
    copy_ = copy.deepcopy(module)
    copy_.train(mode == "train")
    torch.manual_seed(seed)
    return record(copy_, x)


def _one_item_tape(module: torch.nn.Module, x: torch.Tensor, mode: str, seed: int) -> Tape | None:
    """The pass on the first item alone (None if the module cannot take one item): fields are of
    one item (reads across items are the coupling check's), and their backward holds the replay
    of every item traced."""
    try:
        tape = _recorded(module, x[:1], mode, seed)
        output_ref(tape)
    except Exception:                         # e.g. a squeeze that drops a batch of one: the two-item pass serves
        return None
    return tape


def check_cache(module: torch.nn.Module, step: Callable[..., Any], x: torch.Tensor, layout: Layout) -> CacheCheck:
    """`step(module, x)`, the incremental path teacher-forced on x, against `module(x)`, both in
    float64 and eval mode: agreeing to 1e-9 (relative) everywhere."""
    model = copy.deepcopy(module).double().eval()
    data = x.double() if x.dtype.is_floating_point else x
    with torch.no_grad():
        full = _first_tensor(model(data))
        stepped = _first_tensor(step(model, data))
    if full is None:
        raise VerifyError("the module returned no tensor")
    if stepped is None or tuple(stepped.shape) != tuple(full.shape):
        raise VerifyError(f"--step: returned {None if stepped is None else list(stepped.shape)}, the module's output is {list(full.shape)}")
    gap = (full - stepped.to(full.dtype)).abs()
    tolerance = 1e-9 * (1 + full.abs())
    bad = (gap > tolerance) | ~torch.isfinite(stepped)
    per_element = to_elements(bad, layout.pattern, layout.sizes, layout.axes, lambda t, d: t.any(d)).any(0).numpy()
    first = None
    if per_element.any():
        candidates = np.argwhere(per_element)
        first = tuple(int(i) for i in min(candidates, key=lambda e: layout.steps[tuple(e)]))
    return CacheCheck(not per_element.any(), float(gap.max()) if gap.numel() else 0.0, first)


def _first_tensor(value: Any) -> torch.Tensor | None:
    from torch.utils._pytree import tree_flatten
    leaves = [v for v in tree_flatten(value)[0] if isinstance(v, torch.Tensor)]
    return leaves[0] if leaves else None
