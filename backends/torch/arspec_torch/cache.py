"""Cached generation, derived from the primitives' declared taps (Paine et al. 2016; Ramachandran
et al. 2017). Imports nothing from arspec: generated standalone files carry a copy.

`WindowCache` serves every raster-ordered model whose data path is position-local (convolutions,
shifts, embeddings, pointwise primitives, conditioning — including ops a user or a plugin adds) or
attends over earlier positions (the keys' and values' history, `keyhistory.KeyHistory`).
Each value keeps a flat buffer (B, C, P + 1) over the positions, slot P a permanent zero that
stands for every read outside the event. A max-plus pass over the taps gives, per call and
position, the last position its value reads; after each position only the values that just became
final are computed, O(layers) per position instead of a full pass. With several channels per
position (R→G→B) the calls reading the current position are recomputed before each channel.

`ScanCache` serves NADE-like models (an ordered prefix sum, per-element calls, an element read-out):
it carries the prefix sum along the order, O(D·H) per sample instead of a pass per element."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from arspec.domains.base import shift_array
from arspec_torch.cstep import CStepProgram, c_step_available, c_step_missing, runtime
from arspec_torch.declared import declared, evaluate, inside_flags, scan_order, scan_rank, tap_table
from arspec_torch.kernels import KERNELS, attend_tokens, attention_tokens, attention_untokens
from arspec_torch.keyhistory import KeyHistory, attention_op, history_of
from arspec_torch.staticstep import GraphedLoop, StaticStepProgram
from arspec_torch.stepplan import (
    StepPlan,
    StepProgram,
    constant_tensors,
    constant_values,
    data_dependent,
    single_threaded_blas,
    state_offsets_of,
    update_frame_values,
)


@dataclass
class StepCall:
    """One primitive call as the cached samplers see it. Its tensors are the net's attributes
    `<id>__<name>`; `taps[i]` lists the offsets read from argument i (None: not position-local)."""

    id: str
    kind: str
    args: tuple[str, ...]
    tensors: tuple[str, ...]
    attrs: dict[str, Any]
    channels: int
    taps: tuple[tuple[tuple[int, ...], ...], ...] | None
    live: tuple[tuple[bool, ...], ...] | None
    mask_sets: bool = False
    scan_role: str | None = None
    training: bool = False          # the kernel takes the net's training flag (dropout)
    per_element: bool = False       # in the ordered scan the kernel takes the element index
    step: Any = None                # its step at one position (arspec.primitives.step.DeclaredStep): what the step engines lower


DATA = ("x", "x_raw")


def followed(call: StepCall, data_groups: int) -> bool:
    """Whether the window cache follows a data-dependent call: fixed taps (and state taps, for a
    recurrence) or an attention over its keys' history."""
    return call.taps is not None or attention_op(call, data_groups) is not None


def run_call(call: StepCall, net: torch.nn.Module, args: list[torch.Tensor], element: int | None = None) -> torch.Tensor:
    """The call's kernel on whole tensors, its parameters and buffers taken from `net` (`element`:
    the one element an ordered-scan step computes, for kernels that need it)."""
    tensors = {name: getattr(net, f"{call.id}__{name}") for name in call.tensors}
    extra: dict[str, Any] = {}
    if call.per_element and element is not None:
        extra["element"] = element
    if call.mask_sets:
        extra["active"] = int(getattr(net, "active", 0))
    if call.training:
        extra["training"] = bool(net.training)
    return kernel_of(call)(*args, **tensors, **call.attrs, **extra)


def kernel_of(call: StepCall) -> Callable[..., torch.Tensor]:
    """The whole-tensor kernel of a call: its kind's, or, for a primitive declared by its step
    (attrs carry the program), the declared step evaluated everywhere."""
    kernel = KERNELS.get(call.kind)
    if kernel is None and "program" in call.attrs:
        return declared
    if kernel is None:
        raise KeyError(f"no kernel for primitive {call.kind!r}")
    return kernel


def is_raster(orders: np.ndarray, internal: tuple[int, ...]) -> bool:
    """Every ordering is raster over the internal event (C, *S): positions in row-major order,
    channels within a position in order."""
    c, positions = internal[0], int(np.prod(internal[1:]))
    raster = (np.arange(positions)[None, :] * c + np.arange(c)[:, None]).reshape(-1)
    return all(np.array_equal(np.asarray(o).reshape(-1), raster) for o in np.asarray(orders).reshape(len(orders), -1))


def no_cache_because(calls: list[StepCall], internal: tuple[int, ...], orders: np.ndarray, dense_output: bool) -> str:
    """Why a model has no cached sampler (what cache_for needs and did not find)."""
    if dense_output:
        return "its output is a dense layer over the whole event (MADE-like: each element's step is a full pass)"
    if not is_raster(orders, internal):
        return "its ordering is not raster (the window cache follows raster order)"
    data = data_dependent(calls)
    opaque = [c.kind for c in calls if data[c.id] and not followed(c, internal[0])]
    if opaque:
        return f"{opaque[0]} reads positions no step rule covers"
    return "no cached sampler fits"


def cache_for(calls: list[StepCall], output: str, internal: tuple[int, ...], orders: np.ndarray,
              dense_output: bool) -> LazyCache | ScanCache | None:
    """The cached sampler that fits this model, or None (sampling then runs a pass per step)."""
    data = data_dependent(calls)
    steps = [c for c in calls if data[c.id]]
    if not dense_output and is_raster(orders, internal) and all(followed(c, internal[0]) for c in steps):
        order = np.asarray(orders).reshape(len(orders), -1)[0]
        return LazyCache(lambda: WindowCache(calls, output, internal, order))
    roles = [c.scan_role for c in steps]
    if (dense_output and len(steps) >= 2 and roles[0] == "prefix" and roles[-1] == "emit" and steps[-1].id == output
            and steps[0].args == ("x",) and all(r == "element" for r in roles[1:-1])
            and all(tuple(c.args) == (prev.id,) for prev, c in zip(steps, steps[1:]))):
        return ScanCache(steps)
    return None


class LazyCache:
    """A model's window cache, planned when it is first used: planning walks every position of the
    event (seconds for a large video), and training never needs it. Behaves as the cache itself."""

    def __init__(self, build: Callable[[], Any]) -> None:
        object.__setattr__(self, "_build", build)
        object.__setattr__(self, "_built", None)

    @property
    def cache(self) -> Any:
        """The planned cache (planned now if it was not yet)."""
        if self._built is None:
            object.__setattr__(self, "_built", self._build())
        return self._built

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.cache(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_build", "_built"):
            raise AttributeError(name)
        return getattr(self.cache, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.cache, name, value)


def _through_state(final: np.ndarray, call: StepCall) -> np.ndarray:
    """A value that reads its own value elsewhere is final only once that is: the maximum over
    the state offsets, carried along its scan order (a read position comes first)."""
    offsets = state_offsets_of(call)
    if not offsets:
        return final
    flat = final.reshape(-1).copy()
    shape = final.shape
    tables = [tap_table(o, shape).numpy() for o in offsets]
    for p in scan_order(offsets, shape):
        for table in tables:
            q = table[p]
            if q < flat.size:
                flat[p] = max(flat[p], flat[q])
    return flat.reshape(shape)


def _state_needs(need: np.ndarray, call: StepCall) -> np.ndarray:
    """A value read by its own value elsewhere is needed no later than its reader is computed:
    the minimum carried backwards along the scan order."""
    offsets = state_offsets_of(call)
    if not offsets:
        return need
    flat = need.reshape(-1).copy()
    tables = [tap_table(o, need.shape).numpy() for o in offsets]
    for p in scan_order(offsets, need.shape)[::-1]:
        for table in tables:
            q = table[p]
            if q < flat.size:
                flat[q] = min(flat[q], flat[p])
    return flat.reshape(need.shape)


def _fronts_within(at: torch.Tensor, offsets: tuple[tuple[int, ...], ...], spatial: tuple[int, ...]) -> list[torch.Tensor]:
    """Positions computed together, split so that none reads the state of another of the same
    batch before it is computed (along the scan order; one group when there is no state)."""
    if not offsets or at.numel() < 2:
        return [at]
    rank = scan_rank(offsets, spatial)
    positions = sorted(at.tolist(), key=lambda p: rank[p])
    group: dict[int, int] = {}
    tables = [tap_table(o, spatial).numpy() for o in offsets]
    for p in positions:
        group[p] = 1 + max([group[int(t[p])] for t in tables if int(t[p]) in group], default=-1)
    count = max(group.values()) + 1
    return [torch.as_tensor(sorted(p for p in positions if group[p] == g), device=at.device) for g in range(count)]


def _shifted_max(table: np.ndarray, offset: tuple[int, ...]) -> np.ndarray:
    """out[p] = table[p + offset], -inf where p + offset is outside (the exporter copies
    `shift_array` beside this module's source, so generated files need no arspec)."""
    return shift_array(table, offset, fill=-np.inf)


class WindowCache:
    """Callable attached to an ARModel as `model.incremental` (see ARModel.sample)."""

    def __init__(self, calls: list[StepCall], output: str, internal: tuple[int, ...], order: np.ndarray) -> None:
        self.groups, self.spatial = internal[0], tuple(internal[1:])
        self.positions = int(np.prod(self.spatial))
        self.output = output
        data = data_dependent(calls)
        self.pre = [c for c in calls if not data[c.id]]
        self.steps = [c for c in calls if data[c.id]]
        self.histories = {c.id: history_of(c, self.groups, self.spatial) for c in self.steps}
        self.attention = {name for name, history in self.histories.items() if history is not None}
        final = self._finality()
        self._when = final if self.attention else self._latest(final)
        self._planned_schedule: tuple[list[tuple[int, Any]], list[list[tuple[int, Any]]]] | None = None
        plan = StepPlan(calls, output, internal, self._frame_values(final), self.histories)
        self.plan = plan if plan.usable else None
        self.plan_missing = plan.unusable_because
        self._kept: tuple[Any, StepProgram] | None = None      # the last program, with what it was built from
        #: how cached generation runs: None picks per device (see `engine_for`); 'plan', 'static' or
        #: 'torch' forces one (the tests run the accelerators' static program on the CPU this way)
        self.engine: str | None = None
        #: whether the last sampling through the static program replayed a CUDA graph
        self.graphed = False

    def _finality(self) -> dict[str, np.ndarray]:
        """Per data-dependent value and position: the last position its value reads (max-plus over
        the live taps); -inf where it reads no data."""
        none = np.full(self.spatial, -np.inf)
        final = {name: np.arange(self.positions, dtype=float).reshape(self.spatial) for name in DATA}
        for c in self.steps:
            history = self.histories[c.id]
            if history is not None:
                final[c.id] = history.finality(*[final.get(a, none) for a in c.args])
                continue
            f = none.copy()
            assert c.taps is not None and c.live is not None
            for arg, taps, live in zip(c.args, c.taps, c.live):
                if arg not in final:
                    continue
                for offset, used in zip(taps, live):
                    if used:
                        f = np.maximum(f, _shifted_max(final[arg], offset))
            final[c.id] = _through_state(f, c)
        return final

    def _frame_values(self, final: dict[str, np.ndarray]) -> frozenset[str]:
        """In a video, the values that read only frames before their own (the recurrence over
        frames and what follows it): the compiled step plan computes them a frame at a time."""
        if len(self.spatial) != 3 or self.spatial[0] < 2:
            return frozenset()
        start = (np.arange(self.positions) // int(np.prod(self.spatial[1:])) * int(np.prod(self.spatial[1:]))).reshape(self.spatial)
        return frozenset(c.id for c in self.steps if c.id not in self.attention and np.isfinite(final[c.id]).any()
                         and bool((final[c.id] < start).all()))

    def _latest(self, final: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per value and position, the latest step at which it can still be computed: just before
        the first reader needs it (the output: before its element is drawn), never before it is
        final. Values that become final one position at a time but are read a whole frame later
        (a video's encoder, read by the recurrence over frames) are then computed together, a
        frame in one call, instead of one position at a time."""
        flat = np.arange(self.positions, dtype=float).reshape(self.spatial)
        need = {c.id: np.full(self.spatial, np.inf) for c in self.steps}
        out_final = final[self.output]
        need[self.output] = np.where(out_final >= flat, flat, flat - 1)
        for c in reversed(self.steps):
            n = np.where(np.isfinite(need[c.id]), need[c.id], final[c.id])
            n = np.maximum(n, final[c.id])
            need[c.id] = _state_needs(n, c)
            n = need[c.id]
            if c.taps is None or c.live is None:
                continue
            for arg, taps, live in zip(c.args, c.taps, c.live):
                if arg not in need:
                    continue
                for offset, used in zip(taps, live):
                    if used:                             # the value at p reads arg at p + offset
                        read = _shifted_max(-n, tuple(-o for o in offset))
                        need[arg] = np.minimum(need[arg], np.where(np.isfinite(read), -read, np.inf))
        return need

    @property
    def initial(self) -> list[tuple[int, Any]]:
        """The calls the torch path runs before the first position (see `_scheduled`)."""
        return self._scheduled()[0]

    @property
    def schedule(self) -> list[list[tuple[int, Any]]]:
        """The calls the torch path runs after each position (see `_scheduled`)."""
        return self._scheduled()[1]

    def _scheduled(self) -> tuple[list[tuple[int, Any]], list[list[tuple[int, Any]]]]:
        """Planned on first use (the CPU's compiled step plan does not need it), then kept."""
        if self._planned_schedule is None:
            self._planned_schedule = self._schedule()
        return self._planned_schedule

    def _schedule(self) -> tuple[list[tuple[int, Any]], list[list[tuple[int, Any]]]]:
        """The calls to run before the first position and after each position q: per step,
        (call, position) in call order, the positions of one call at one step gathered into one
        index tensor where there are several (computed in one batched call)."""
        when, n = self._when, self.positions
        step = np.maximum(np.concatenate([when[c.id].reshape(-1) for c in self.steps]), -1).astype(np.int64)
        call = np.repeat(np.arange(len(self.steps)), n)
        pos = np.tile(np.arange(n), len(self.steps))
        order = np.lexsort((pos, call, step))
        step, call, pos = step[order], call[order], pos[order]
        bounds = np.flatnonzero((np.diff(step) != 0) | (np.diff(call) != 0)) + 1
        starts, ends = np.concatenate([[0], bounds]), np.concatenate([bounds, [len(step)]])
        initial: list[tuple[int, Any]] = []
        schedule: list[list[tuple[int, Any]]] = [[] for _ in range(n)]
        for a, b in zip(starts.tolist(), ends.tolist()):
            entry = (int(call[a]), int(pos[a]) if b - a == 1 else torch.as_tensor(pos[a:b]))
            (initial if step[a] < 0 else schedule[int(step[a])]).append(entry)
        return initial, schedule

    # -- per-call preparation: buffers and one closure per data-dependent call ----------------------
    def _flat(self, value: torch.Tensor, n: int) -> torch.Tensor:
        """A whole tensor as a flat (n, C, P + 1) buffer with the zero slot."""
        value = value.expand(n, value.shape[1], *self.spatial).reshape(n, value.shape[1], self.positions)
        return torch.cat([value, value.new_zeros(n, value.shape[1], 1)], dim=2)

    def _prepare(self, model: Any, n: int, context: dict[str, Any]) -> tuple[dict[str, torch.Tensor], list[Callable[[int], None]]]:
        net, dtype, device = model.net, model.dtype, model.device
        values: dict[str, torch.Tensor] = dict(net.context_values(model._check_context(context), dtype))
        for c in self.pre:
            values[c.id] = run_call(c, net, [values[a] for a in c.args])
        bufs = {"x_raw": torch.zeros((n, self.groups, self.positions + 1), dtype=torch.long, device=device),
                "x": torch.zeros((n, self.groups, self.positions + 1), dtype=dtype, device=device)}
        for c in self.steps:
            bufs[c.id] = torch.zeros((n, c.channels, self.positions + 1), dtype=dtype, device=device)
        steps = []
        for c in self.steps:
            args = [bufs[a] if a in bufs else self._flat(values[a], n) for a in c.args]
            steps.append(self._step(c, net, args, bufs[c.id]))
        return bufs, steps

    def _step(self, call: StepCall, net: Any, args: list[torch.Tensor], out: torch.Tensor) -> Callable[[Any], None]:
        """A closure computing `call` at one flat position p (or a tensor of positions) into `out`:
        its declared step lowered to torch (every built-in primitive on the data path), else its
        kernel on the position's slices (position-local)."""
        tensors = {name: getattr(net, f"{call.id}__{name}").detach() for name in call.tensors}
        if call.step is not None:
            return self._declared_step(call, args, out, tensors)
        if call.live is not None and not any(any(used) for used in call.live):    # reads no tap: the same whatever the data
            blank = [torch.zeros_like(a[:, :, :-1]).reshape(a.shape[0], a.shape[1], *self.spatial) for a in args]
            value = self._flat(run_call(call, net, blank).detach(), out.shape[0])

            def constant(p: int | torch.Tensor) -> None:
                out[:, :, p] = value[:, :, p]
            return constant
        extra = {"training": False} if call.training else {}

        def step(p: int | torch.Tensor) -> None:
            out[:, :, p] = KERNELS[call.kind](*[a[:, :, p] for a in args], **tensors, **call.attrs, **extra)
        return step

    def _declared_step(self, call: StepCall, args: list[torch.Tensor], out: torch.Tensor,
                       tensors: dict[str, torch.Tensor]) -> Callable[[Any], None]:
        """A call's declared step at position p (or a batch of positions), evaluated on the
        argument buffers and its own (the state it carries); a gather's taps in one index, an
        attention over the positions its key history names."""
        program, spatial, history = call.step, self.spatial, self.histories[call.id]
        offsets = program.state_offsets
        tables = {op.offsets: torch.stack([tap_table(o, spatial) for o in op.offsets], dim=1).to(out.device)
                  for op in program.ops if op.kind == "gather"}                    # (P, K) per gather, made once

        def one_front(at: torch.Tensor) -> None:
            def read(arg: int, offset: tuple[int, ...]) -> torch.Tensor:
                return args[arg][:, :, tap_table(offset, spatial).to(at.device)[at]]

            def gather(arg: int, taps: tuple[tuple[int, ...], ...]) -> torch.Tensor:
                x = args[arg][:, :, tables[taps][at]]                                                    # (B, C, n, K)
                return x.permute(0, 3, 1, 2).reshape(x.shape[0], -1, x.shape[2])                      # tap-major

            def state(offset: tuple[int, ...]) -> torch.Tensor:
                return out[:, :, tap_table(offset, spatial).to(at.device)[at]]

            def attend(op: Any, query: torch.Tensor) -> torch.Tensor:
                assert history is not None
                return torch.cat([history_attention(history, op, query[:, :, i:i + 1], args[op.arg], args[op.values], p)
                                  for i, p in enumerate(at.tolist())], dim=2)
            out[:, :, at] = evaluate(program, tensors, read, state, gather, attend,
                                     lambda offset: inside_flags(offset, spatial, at, out.dtype)).to(out.dtype)

        def step(p: int | torch.Tensor) -> None:
            at = torch.as_tensor([p] if isinstance(p, int) else p, device=out.device)
            for front in _fronts_within(at, offsets, spatial):
                one_front(front)
        return step

    @staticmethod
    def _run(steps: list[Callable[[Any], None]], pairs: list[tuple[int, Any]]) -> None:
        for i, p in pairs:
            steps[i](p)

    def engine_for(self, model: Any, keep: torch.Tensor | None = None) -> str:
        """'plan': the generated numpy step (the CPU); 'static': the same plan as torch kernels at a
        position held on the device, one CUDA graph per step (accelerators); 'torch': per-call
        closures over full buffers (no fixed-lag plan, videos' frame values, completion)."""
        if self.plan is None:
            return "torch"
        if self.engine is not None:
            chosen = self.engine
        else:
            chosen = "plan" if model.device.type == "cpu" else "static"
        if chosen == "static" and keep is not None:                # completion
            return "torch"
        if chosen == "plan" and model.device.type != "cpu":
            return "static"
        return chosen

    def describe(self, model: Any, keep: torch.Tensor | None = None) -> str:
        """One line: how cached generation will run on this model's device, and why not faster."""
        engine = self.engine_for(model, keep)
        if engine == "plan":
            dtype = np.dtype(str(model.dtype).removeprefix("torch."))
            missing = c_step_missing(self.plan)
            if c_step_available(dtype) and missing:
                return f"cached: the numpy step per position ({missing})"
            if c_step_available(dtype):
                return "cached: one C step per position"
            return "cached: the numpy step per position (the C step is not available here: no C compiler, or ARSPEC_STEP=numpy)"
        if engine == "static":
            return "cached: the static step program on the device"
        why = self.plan_missing or ("completion of given elements" if keep is not None else "")
        return f"cached, on the slower torch path: {why}" if why else "cached: torch steps"

    def _planned(self, model: Any) -> bool:
        """Whether to run the compiled per-step plan (numpy, on the CPU) rather than the torch path."""
        return self.engine_for(model) == "plan"

    def _program(self, model: Any, n: int, context: dict[str, Any], record: bool) -> StepProgram:
        """The CPU step program for a batch of n. Without context, frame values or a record, the
        last one is kept and used again (rings cleared) while the weights are the same tensors at
        the same versions: building one packs every weight, ~15 ms for WaveNet."""
        assert self.plan is not None
        dtype = np.dtype(str(model.dtype).removeprefix("torch."))
        kind = CStepProgram if c_step_available(dtype) and not c_step_missing(self.plan) else StepProgram
        key = None
        if not record and not context and not self.plan.frame_values:
            tensors = [*model.net.parameters(), *model.net.buffers()]
            engine = id(runtime(dtype)) if kind is CStepProgram else None          # the C runtime it calls
            key = (n, dtype, kind, engine, tuple((t.data_ptr(), t._version) for t in tensors))
            if self._kept is not None and self._kept[0] == key:
                program = self._kept[1]
                program.clear()
                return program
        values = dict(model.net.context_values(model._check_context(context), model.dtype))
        constants = constant_values(self.plan, model.net, values, run_call, n, self.spatial, model.dtype)
        program = kind(self.plan, model.net, n, dtype, constants, record)
        program.context_values = values             # its constants are copies of `constants` in its layout
        if key is not None:
            self._kept = (key, program)
        return program

    def _update_frames(self, model: Any, program: Any, raw: torch.Tensor, frame: int | None) -> None:
        """The frame values of frame `frame` (None: all) from the data `raw` (n, C, P) known so far."""
        if not self.plan or not self.plan.frame_values:
            return
        d, n = model.distribution, raw.shape[0]
        shaped = raw.reshape(n, self.groups, *self.spatial)
        x_raw = shaped.long() if d.discrete else torch.zeros(shaped.shape, dtype=torch.long, device=shaped.device)
        update_frame_values(self.plan, model.net, program.context_values, run_call, x_raw, d.encode(shaped, model.dtype),
                            program.constants, frame, getattr(program, "item_major", False))

    @torch.no_grad()
    def teacher_forced(self, model: Any, x: torch.Tensor, **context: torch.Tensor) -> torch.Tensor:
        """The distribution parameters computed through the cache with x known: (B, *event, P).
        Must equal model(x) — the check that cached generation agrees with the training graph."""
        x = model.to_internal(x.to(model.device))
        engine = self.engine_for(model)
        if engine == "plan":
            with single_threaded_blas():
                return self._teacher_forced_planned(model, x, context)
        if engine == "static":
            return self._teacher_forced_static(model, x, context)
        n = x.shape[0]
        bufs, steps = self._prepare(model, n, context)
        raw = x.to(model.device).reshape(n, self.groups, -1)
        bufs["x_raw"][:, :, :-1] = raw.long() if model.distribution.discrete else 0
        bufs["x"][:, :, :-1] = model.distribution.encode(raw, model.dtype)
        self._run(steps, self.initial)
        for q in range(self.positions):
            self._run(steps, self.schedule[q])
        return model.user_params(bufs[self.output][:, :, :-1])

    def _teacher_forced_planned(self, model: Any, x: torch.Tensor, context: dict[str, Any]) -> torch.Tensor:
        n, d = x.shape[0], model.distribution
        program = self._program(model, n, context, record=True)
        raw = x.to(model.device).reshape(n, self.groups, -1)
        enc = d.encode(raw, model.dtype).numpy()
        raw_np = raw.long().numpy() if d.discrete else np.zeros(raw.shape, dtype=np.int64)
        self._update_frames(model, program, raw, None)
        for q in range(self.plan.first, self.positions):
            if q >= 0:
                program.write_data(q, enc[:, :, q], raw_np[:, :, q])
            program.step(q)
        return model.user_params(torch.from_numpy(program.full))

    def _force(self, program: Any, enc: Any, levels: Any, step: Callable[[int], None]) -> None:
        """Teacher forcing through the static program: x of each position written into the data
        rings as it becomes known, every step run in order."""
        plan, rx, rxr = program.plan, program.rings["x"], program.rings["x_raw"]
        for q in range(plan.first, self.positions):
            if q >= 0:
                rx[:, q % plan.ring["x"]] = enc[:, :, q]
                rxr[:, q % plan.ring["x_raw"]] = levels[:, :, q]
            step(q)

    def _sample_planned(self, model: Any, x: torch.Tensor, keep: torch.Tensor | None, generator: Any,
                        context: dict[str, Any]) -> torch.Tensor:
        n, d, groups = x.shape[0], model.distribution, self.groups
        program = self._program(model, n, context, record=False)
        plan, run_step = program.plan, program.step
        rx = program.rings["x"]
        frame = plan.frame if plan.frame_values else 0

        def step(q: int) -> None:
            if frame and (q + 1) % frame == 0 and 0 < q + 1 < self.positions:   # frame q // F is complete
                self._update_frames(model, program, result, (q + 1) // frame)
            run_step(q)

        lag_out = plan.lag[plan.output]
        assert lag_out is not None
        given = x.reshape(n, groups, -1)
        keep_flat = keep.reshape(groups, -1) if keep is not None else None
        result = torch.zeros_like(given)
        draw = self._numpy_draw(model, n, generator, given, self.positions * groups, rx.dtype)
        drawn = result.numpy() if draw is not None else None      # the same memory, written without a dispatch
        if (isinstance(program, CStepProgram) and draw is not None and d.c_draw is not None and groups == 1 and keep is None
                and not frame):
            return self._sample_in_c(model, program, n, generator, result)
        q = plan.first
        for p in range(self.positions):
            for g in range(groups):
                if lag_out < 0:                  # the position's parameters read only earlier positions
                    while q <= p + lag_out:
                        step(q)
                        q += 1
                else:                            # channel groups: the output's own calls again before each channel,
                    while q < p:                 # the whole step once the position is complete (at the next one)
                        step(q)
                        q += 1
                    program.redo(p)
                if draw is not None:
                    sample = draw(np.ascontiguousarray(program.output_at(p).reshape(n, d.params_per_element, groups)[:, :, g]))
                else:
                    params = torch.from_numpy(np.ascontiguousarray(program.output_at(p))).reshape(n, d.params_per_element, groups)
                    pixel = d.tempered(params.transpose(1, 2).unsqueeze(2), model.temperature)
                    sample = d.sample_channel(pixel, result[:, :, p:p + 1], g, model.uniforms(n, 1, generator))[:, 0].to(given.dtype)
                if keep_flat is not None and bool(keep_flat[g, p]):
                    sample = given[:, g, p].numpy() if draw is not None else given[:, g, p]
                if drawn is not None:
                    drawn[:, g, p] = sample
                    program.write_channel(p, g, d.encode_numpy(sample, rx.dtype), sample)
                else:
                    result[:, g, p] = sample
                    program.write_channel(p, g, d.encode(sample, model.dtype).numpy(), sample.long().numpy() if d.discrete else None)
        return result.reshape(n, *model.internal_shape)

    def _sample_in_c(self, model: Any, program: CStepProgram, n: int, generator: Any, result: torch.Tensor) -> torch.Tensor:
        """The whole sampling loop in C, 256 positions per call, their uniforms drawn in one call
        each (the naive loop's numbers, in its order) and their noise transform vectorized."""
        d, dtype = model.distribution, program.dtype
        levels = result.numpy().reshape(n, self.positions)                      # (n, P) int64, shared with `result`
        q = program.plan.first
        for start in range(0, self.positions, DRAWS_AHEAD):
            stop = min(self.positions, start + DRAWS_AHEAD)
            noise = np.ascontiguousarray(noise_ahead(model, n, stop - start, generator, np.dtype(dtype)), dtype=dtype)
            q = program.sample(q, (start, stop), d.c_draw, noise, float(model.temperature), d.c_encoding(), levels)
        return result.reshape(n, *model.internal_shape)

    @staticmethod
    def _numpy_draw(model: Any, n: int, generator: Any, given: torch.Tensor, draws: int, dtype: np.dtype) -> Any:
        """For distributions that draw in numpy: a function from one channel's parameters (n, P)
        to its samples (n,), drawing the same uniforms, in the same order, as successive
        `model.uniforms(n, 1, generator)` calls; None otherwise (the torch path draws). The uniforms
        of up to 256 draws come in one call (a CPU generator fills a tensor in order: the same
        numbers), their noise transform vectorized over them; never more than `draws` in all."""
        d = model.distribution
        if not d.draws_in_numpy or given.dtype != torch.long:
            return None
        if (generator.device if generator is not None else model.device).type != "cpu":
            return None
        temperature = float(model.temperature)
        state = {"noise": np.zeros((0,)), "next": 0, "left": draws}

        def draw(logits: np.ndarray) -> np.ndarray:
            if state["next"] == len(state["noise"]):
                count = max(1, min(DRAWS_AHEAD, state["left"]))
                state.update(noise=noise_ahead(model, n, count, generator, dtype), next=0, left=state["left"] - count)
            noise = state["noise"][state["next"]]
            state["next"] += 1
            return d.sample_noise_numpy(logits / temperature if temperature != 1.0 else logits, noise)

        return draw

    def _static_program(self, model: Any, n: int, context: dict[str, Any], record: bool) -> StaticStepProgram:
        assert self.plan is not None
        values = dict(model.net.context_values(model._check_context(context), model.dtype))
        constants = constant_tensors(self.plan, model.net, values, run_call, n, self.spatial, model.dtype, model.device)
        program = StaticStepProgram(self.plan, model.net, n, model.dtype, model.device, constants, record)
        program.context_values = values
        return program

    def _teacher_forced_static(self, model: Any, x: torch.Tensor, context: dict[str, Any]) -> torch.Tensor:
        n, d = x.shape[0], model.distribution
        program = self._static_program(model, n, context, record=True)
        raw = x.reshape(n, self.groups, -1)
        levels = raw.long() if d.discrete else torch.zeros(raw.shape, dtype=torch.long, device=raw.device)
        self._update_frames(model, program, raw, None)
        self._force(program, d.encode(raw, model.dtype), levels, lambda q: program.step(torch.tensor([q], device=model.device)))
        assert program.full is not None
        return model.user_params(program.full[:, :, :-1])

    def _sample_static(self, model: Any, x: torch.Tensor, generator: Any, context: dict[str, Any],
                       chunk: int = 256) -> torch.Tensor:
        """Sampling through the static program: after a prologue, each position is one replay of a
        captured body (the step that makes the position's parameters final, then its channels drawn
        and written into the data rings), run in segments: each segment's uniforms are drawn ahead
        in the naive loop's order, and in a video the frame values of the next frame are recomputed
        between segments, once the frames before it are complete."""
        n, d, groups, device = x.shape[0], model.distribution, self.groups, model.device
        program = self._static_program(model, n, context, record=False)
        plan = program.plan
        lag_out = plan.lag[plan.output]
        assert lag_out is not None
        rx, rxr, out = program.rings["x"], program.rings["x_raw"], program.rings[plan.output]
        sizes = plan.ring
        recompute = lag_out >= 0            # channel groups: the output's own calls run again before each channel
        # step q = p + lag (lag_out, or -1 with channel groups) comes first in body(p): a frame's values
        # are recomputed before the body whose step q has q + 1 at the frame's start
        lag = -1 if recompute else lag_out
        updates = {t * plan.frame - 1 - lag for t in range(1, self.positions // plan.frame)} if plan.frame_values else set()
        cuts = sorted({0, self.positions} | set(range(0, self.positions, chunk)) | {u for u in updates if 0 < u < self.positions})
        longest = max(b - a for a, b in zip(cuts, cuts[1:]))
        position = torch.zeros(1, dtype=torch.long, device=device)
        first = torch.zeros(1, dtype=torch.long, device=device)             # the segment's first position
        result = torch.zeros((n, groups, self.positions + 1), dtype=x.dtype, device=device)
        current = torch.zeros((n, groups, 1), dtype=x.dtype, device=device)     # the position's channels so far
        noise = torch.zeros((longest * groups, n, 1, d.noise_per_element), device=device)
        temperature = model.temperature

        def body() -> None:
            program.step(position + lag)
            current.zero_()
            base = (position - first) * groups
            for g in range(groups):
                if recompute:
                    program.redo(position)
                params = out.index_select(1, position.remainder(sizes[plan.output])).squeeze(1)
                pixel = d.tempered(params.reshape(n, -1, groups).transpose(1, 2).unsqueeze(2), temperature)
                u = noise.index_select(0, base + g).squeeze(0)
                sample = d.sample_channel(pixel, current, g, u)[:, 0].to(x.dtype)
                current[:, g, 0] = sample
                result[:, g].index_copy_(1, position, sample.unsqueeze(1))
                rx[:, :, g].index_copy_(1, position.remainder(sizes["x"]), d.encode(sample, model.dtype).unsqueeze(1))
                if d.discrete:
                    rxr[:, :, g].index_copy_(1, position.remainder(sizes["x_raw"]), sample.long().unsqueeze(1))
            position.add_(1)

        for q in range(plan.first, lag):
            program.step(torch.tensor([q], device=device))
        loop = GraphedLoop(body, device, graphs=True)
        for a, b in zip(cuts, cuts[1:]):
            if a in updates:
                self._update_frames(model, program, result[:, :, :-1], (a + lag + 1) // plan.frame)
            first.fill_(a)
            noise[:(b - a) * groups] = model.uniforms_ahead(n, (b - a) * groups, generator)
            loop.run(b - a)
        self.graphed = loop.graph is not None
        return result[:, :, :-1].reshape(n, *model.internal_shape)

    @torch.no_grad()
    def __call__(self, model: Any, x: torch.Tensor, keep: torch.Tensor | None, generator: Any, context: dict[str, Any]) -> torch.Tensor:
        engine = self.engine_for(model, keep)
        if engine == "plan":
            with single_threaded_blas():
                return self._sample_planned(model, x, keep, generator, context)
        if engine == "static":
            return self._sample_static(model, x, generator, context)
        n, d, groups = x.shape[0], model.distribution, self.groups
        bufs, steps = self._prepare(model, n, context)
        raw, enc = bufs["x_raw"], bufs["x"]
        given = x.reshape(n, groups, -1)
        keep_flat = keep.reshape(groups, -1) if keep is not None else None
        if keep_flat is not None:       # known elements are visible from the start (clamped sampling)
            if d.discrete:
                raw[:, :, :-1] = torch.where(keep_flat, given.long(), raw[:, :, :-1])
            enc[:, :, :-1] = torch.where(keep_flat, d.encode(given, model.dtype), enc[:, :, :-1])
        out = bufs[self.output]
        p_count = d.params_per_element
        result = torch.zeros_like(given)
        self._run(steps, self.initial)
        for q in range(self.positions):
            for g in range(groups):
                if groups > 1:
                    self._run(steps, self.schedule[q])
                # the position as a one-position event: (n, C, 1, P) parameters, (n, C, 1) values so far
                pixel = d.tempered(out[:, :, q].reshape(n, p_count, groups).transpose(1, 2).unsqueeze(2), model.temperature)
                step = torch.zeros((groups, 1), dtype=torch.bool, device=pixel.device)
                step[g] = True
                u = model.uniforms(n, 1, generator)
                sample = d.sample_step(pixel, result[:, :, q:q + 1], step, u)[:, 0].to(given.dtype)
                if keep_flat is not None and bool(keep_flat[g, q]):
                    sample = given[:, g, q]
                result[:, g, q] = sample
                if d.discrete:
                    raw[:, g, q] = sample.long()
                enc[:, g, q] = d.encode(sample, model.dtype)
            self._run(steps, self.schedule[q])
        return result.reshape(n, *model.internal_shape)


#: draws whose uniforms come in one generator call when a CPU plan samples
DRAWS_AHEAD = 256


def noise_ahead(model: Any, n: int, count: int, generator: Any, dtype: np.dtype) -> np.ndarray:
    """The noise of `count` successive draws of n elements, (count, n, noise): their uniforms in
    one call (a CPU generator fills a tensor in order: the numbers `count` calls of
    `model.uniforms(n, 1, generator)` would give), `Distribution.noise_numpy` vectorized over them."""
    uniforms = model._draw_uniforms(n * count, 1, generator).reshape(count, n, -1).numpy()
    return model.distribution.noise_numpy(uniforms, dtype)


def history_attention(history: KeyHistory, op: Any, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                      p: int) -> torch.Tensor:
    """The attention at position p on the torch path: query (B, C, 1), the key and value buffers
    (B, C, P + 1) read at the positions and tokens `history` names -> (B, Cv, 1)."""
    lo, hi, mask = int(history.lo[p]), int(history.hi[p]), history.masks[p]
    if hi == lo:
        return query.new_zeros(query.shape[0], values.shape[1], 1)
    allowed = None if mask is None else torch.as_tensor(mask.reshape(mask.shape[0], -1), device=query.device)
    out = attend_tokens(attention_tokens(query, op.groups, op.heads), attention_tokens(keys[:, :, lo:hi], op.groups, op.heads),
                        attention_tokens(values[:, :, lo:hi], op.groups, op.heads), allowed)
    return attention_untokens(out, op.groups, (1,))


@dataclass
class ScanCache:
    """Cached generation for an ordered prefix sum read out per element (NADE): the prefix is
    carried along the order and updated once per element."""

    calls: list[StepCall] = field(default_factory=list)

    @torch.no_grad()
    def __call__(self, model: Any, x: torch.Tensor, keep: torch.Tensor | None, generator: Any, context: dict[str, Any]) -> torch.Tensor:
        net, d = model.net, model.distribution
        prefix, elements, emit = self.calls[0], self.calls[1:-1], self.calls[-1]
        weight, bias = getattr(net, f"{prefix.id}__weight"), getattr(net, f"{prefix.id}__bias")
        perms = getattr(net, f"{prefix.id}__perms")
        out_weight, out_bias = getattr(net, f"{emit.id}__weight"), getattr(net, f"{emit.id}__bias")
        n = x.shape[0]
        flat = x.reshape(n, -1).clone()
        known = keep.reshape(-1) if keep is not None else None
        a = bias.expand(n, -1).clone()
        for e in perms[model.active_mask % perms.shape[0]].tolist():
            h = a
            for c in elements:
                h = run_call(c, net, [h], element=e)
            params = d.tempered(h @ out_weight[:, e].t() + out_bias[:, e], model.temperature)       # (n, P)
            value = d.sample(params.unsqueeze(1), model.uniforms(n, 1, generator))[:, 0].to(flat.dtype)
            if known is not None and bool(known[e]):
                value = flat[:, e]
            flat[:, e] = value
            a = a + d.encode(value, a.dtype).unsqueeze(-1) * weight[e]
        return flat.reshape(x.shape)
