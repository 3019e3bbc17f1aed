"""The per-step plan (stepplan.StepPlan) as torch code for accelerators, and its sampler: every
generation step runs the same kernels on the same buffers with the position held in a device
tensor, so one step, together with drawing the element it makes final, is captured once as a
CUDA graph and replayed per position. On a GPU, cached generation at these sizes is bound by
launching kernels one by one from Python (measured on an H200: cached WaveNet no faster than
the naive loop); a replayed graph pays that once per step. Imports nothing from arspec:
generated standalone files carry a copy.

Rings follow StepPlan's layout with one more slot: slot `size` is the permanent zero that reads
outside the event land on, slot `size + 1` is scratch, where a step writes a value whose position
lies outside the event (the numpy plan skips those calls; a graph cannot branch)."""
from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch

from arspec_torch.declared import ACTIVATIONS
from arspec_torch.kernels import attend_tokens, attention_tokens, attention_untokens, channel_norm


class StaticStepProgram:
    """A StepPlan bound to a model's current weights and one batch, as torch tensors on the model's
    device: rings, index tables, and `step(q)`, one generation step with q a (1,) long tensor."""

    def __init__(self, plan: Any, net: Any, batch: int, dtype: torch.dtype, device: torch.device,
                 constants: dict[str, torch.Tensor], record: bool) -> None:
        self.plan, self.batch, self.dtype, self.device = plan, batch, dtype, device
        self.positions = plan.positions
        self.rings = {v: torch.zeros((batch, size + 2, plan.channels(v)), dtype=torch.long if v == "x_raw" else dtype,
                                     device=device) for v, size in plan.ring.items()}
        self.constants = constants            # on the device in dtype; frame values are rewritten in place
        self.full = (torch.zeros((batch, plan.calls[plan.output].channels, plan.positions + 1), dtype=dtype, device=device)
                     if record else None)
        self.groups: list[tuple[int, list[tuple[Any, Callable[..., torch.Tensor]]]]] = []
        for c in plan.steps:                                 # calls in order, grouped by lag as in StepProgram
            lag = plan.lag[c.id]
            if not self.groups or self.groups[-1][0] != lag:
                self.groups.append((lag, []))
            self.groups[-1][1].append((c, self._compute(c, net)))

    def cache_bytes(self) -> int:
        """Memory the program holds for its batch: every ring (with its zero and scratch slots) and
        the full output record when teacher forcing; the weights it reads are the model's own."""
        held = [*self.rings.values(), *([self.full] if self.full is not None else [])]
        return sum(t.numel() * t.element_size() for t in held)

    def _tensor(self, c: Any, name: str, net: Any) -> torch.Tensor:
        return getattr(net, f"{c.id}__{name}").detach().to(self.device, self.dtype)

    def _table(self, values: Any) -> torch.Tensor:
        return torch.as_tensor(values, dtype=torch.long, device=self.device)

    def _ring_at(self, value: str) -> Callable[[torch.Tensor], torch.Tensor]:
        """Reading `value` at position p (its own slot in its ring), (B, C)."""
        ring, size = self.rings[value], self.plan.ring[value]
        return lambda p: ring.index_select(1, p.remainder(size)).squeeze(1)

    def _arg(self, c: Any, i: int) -> Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]:
        """How call c reads argument i at position p: a local of this step, a ring slot, a constant."""
        arg, how = c.args[i], self.plan.reads[(c.id, i)]
        if how == "local":
            return lambda p, local: local[arg]
        if how == "constant":
            value = self.constants[arg]
            if value.dim() == 2:
                return lambda p, local: value
            return lambda p, local: value.index_select(2, p).squeeze(2)
        at = self._ring_at(arg)
        return lambda p, local: at(p)

    def _compute(self, c: Any, net: Any) -> Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]:
        """Call c's value at position p (a (1,) tensor, clamped into the event), (B, C)."""
        kind = c.kind
        if c.step is not None:
            return self._declared(c, net)
        raise ValueError(f"no step rule for {kind}")

    def _declared(self, c: Any, net: Any) -> Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]:
        """A call's step (arspec.primitives.step), each operation lowered once to a kernel on (B, C)
        values at position p: reads and gathers through the plan's slot tables, products by the
        weight matrix made once (`StepOp.matrix`), so a step costs the kernels it needs and no more."""
        program = c.step
        lowered = [self._lower(c, net, op) for op in program.ops]
        output = program.output

        def step(p: torch.Tensor, local: dict[str, torch.Tensor]) -> torch.Tensor:
            values: list[torch.Tensor] = []
            for fn in lowered:
                values.append(fn(p, local, values))
            return values[output]
        return step

    def _lower(self, c: Any, net: Any, op: Any) -> Callable[[torch.Tensor, dict[str, torch.Tensor], list[torch.Tensor]], torch.Tensor]:
        """One operation of a step as a closure over the program's buffers."""
        kind, inputs, batch = op.kind, op.inputs, self.batch
        if kind in ("read", "gather"):
            if self.plan.reads[(c.id, op.arg)] != "ring":               # a value of this step, or a constant, at p
                a = self._arg(c, op.arg)
                return lambda p, local, v: a(p, local)
            offsets = (op.offset,) if kind == "read" else op.offsets
            table = self._table(self.plan.tap_slots(c, op.arg, offsets))
            ring = self.rings[c.args[op.arg]]
            return lambda p, local, v: ring.index_select(1, table.index_select(0, p).view(-1)).reshape(batch, -1)   # taps x C
        if kind == "state":
            own, slots = self.rings[c.id], self._table(self.plan.state_slots(c, op.offset))
            return lambda p, local, v: own.index_select(1, slots.index_select(0, p)).squeeze(1)
        if kind == "inside":
            flags = torch.as_tensor(self.plan.inside(op.offset), device=self.device).to(self.dtype).unsqueeze(1)   # (P, 1)
            return lambda p, local, v: flags.index_select(0, p).expand(batch, 1)
        if kind == "embed":
            table = self._tensor(c, op.weight, net)
            if op.mask:
                table = table * self._tensor(c, op.mask, net).unsqueeze(1)                              # (G, K, C)
            raw = self._ring_at(c.args[op.arg])
            return lambda p, local, v: sum(table[g].index_select(0, raw(p)[:, g]) for g in range(table.shape[0]))  # type: ignore[return-value]
        if kind == "product":
            weight = self._tensor(c, op.weight, net)
            if op.mask:
                weight = weight * self._tensor(c, op.mask, net)
            w = op.matrix(weight).t().contiguous()                                                     # (inputs, channels)
            bias = self._tensor(c, op.bias, net) if op.bias else None

            def product(p: torch.Tensor, local: dict[str, torch.Tensor], v: list[torch.Tensor]) -> torch.Tensor:
                x = v[inputs[0]] if len(inputs) == 1 else torch.cat([v[i] for i in inputs], dim=1)
                return x @ w if bias is None else torch.addmm(bias, x, w)
            return product
        if kind == "act":
            fn = ACTIVATIONS[op.fn]
            return lambda p, local, v: fn(v[inputs[0]])
        if kind in ("add", "mul"):
            def combine(p: torch.Tensor, local: dict[str, torch.Tensor], v: list[torch.Tensor]) -> torch.Tensor:
                out = v[inputs[0]]
                for i in inputs[1:]:
                    out = out + v[i] if kind == "add" else out * v[i]
                return out
            return combine
        if kind == "concat":
            return lambda p, local, v: torch.cat([v[i] for i in inputs], dim=1)
        if kind == "gate":
            half = op.channels
            return lambda p, local, v: torch.tanh(v[inputs[0]][:, :half]) * torch.sigmoid(v[inputs[0]][:, half:])
        if kind == "pick":
            index = self._table(list(op.index))
            return lambda p, local, v: v[inputs[0]].index_select(1, index)
        if kind == "norm":
            weight, bias, groups = self._tensor(c, op.weight, net), self._tensor(c, op.bias, net), op.groups
            return lambda p, local, v: channel_norm(v[inputs[0]], weight, bias, groups=groups)
        if kind == "attend":
            return self._attend(c, op)
        start, stop = op.start, op.start + op.channels                                                 # slice
        return lambda p, local, v: v[inputs[0]][:, start:stop]

    def _attend(self, c: Any, op: Any) -> Callable[[torch.Tensor, dict[str, torch.Tensor], list[torch.Tensor]], torch.Tensor]:
        """An attention at p over every position's keys and values (their rings hold the whole
        event: slot = position), the positions and tokens its pattern does not allow masked out by
        row p of the allowed-token table, so the step's shapes do not change with p."""
        history, positions, heads, groups = self.plan.history(c), self.positions, op.heads, op.groups
        allowed = torch.zeros((positions, groups, positions, groups), dtype=torch.bool)
        for p, mask in enumerate(history.masks):
            allowed[p, :, history.lo[p]:history.hi[p]] = True if mask is None else torch.as_tensor(mask)
        allowed = allowed.reshape(positions, groups, positions * groups).to(self.device)
        sources = []
        for i in (op.arg, op.values):
            arg = c.args[i]
            if self.plan.reads[(c.id, i)] == "constant":                                # (B, C, P) or (B, C)
                value = self.constants[arg]
                whole = value.unsqueeze(2).expand(-1, -1, positions) if value.dim() == 2 else value     # a view: rewrites show
                sources.append(lambda whole=whole: whole)
            else:
                ring = self.rings[arg]
                sources.append(lambda ring=ring: ring[:, :positions].transpose(1, 2))     # (B, C, P)
        keys, values = sources
        query = op.inputs[0]

        def attention(p: torch.Tensor, local: dict[str, torch.Tensor], v: list[torch.Tensor]) -> torch.Tensor:
            out = attend_tokens(attention_tokens(v[query].unsqueeze(2), groups, heads), attention_tokens(keys(), groups, heads),
                                attention_tokens(values(), groups, heads), allowed.index_select(0, p)[0])
            return attention_untokens(out, groups, (1,))[:, :, 0]                          # (B, H dv G)
        return attention

    def step(self, q: torch.Tensor, only: set[str] | None = None) -> None:
        """One generation step: every call (`only`: those named) at position q - lag, written into
        its ring (a position outside the event computes on clamped reads and writes to the scratch slot)."""
        local: dict[str, torch.Tensor] = {}
        plan = self.plan
        for lag, calls in self.groups:
            if only is not None and not any(c.id in only for c, _ in calls):
                continue
            p = q - lag
            inside = (p >= 0) & (p < self.positions)
            clamped = p.clamp(0, self.positions - 1)
            for c, compute in calls:
                if only is not None and c.id not in only:
                    continue
                if c.id in plan.burst_lag:
                    self._burst(c, compute, q, local)
                    continue
                value = compute(clamped, local)
                local[c.id] = value
                self._store(c, value, p, inside)

    def _store(self, c: Any, value: torch.Tensor, p: torch.Tensor, inside: torch.Tensor) -> None:
        """Call c's value at position p into its ring and, for the output when teacher forcing,
        the full record; where `inside` is false, into the scratch slot (a graph cannot branch)."""
        if c.id in self.rings:
            size = self.plan.ring[c.id]
            self.rings[c.id].index_copy_(1, torch.where(inside, p.remainder(size), size + 1), value.unsqueeze(1))
        if self.full is not None and c.id == self.plan.output:
            self.full.index_copy_(2, torch.where(inside, p, self.positions), value.unsqueeze(2))

    def _burst(self, c: Any, compute: Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor], q: torch.Tensor,
               local: dict[str, torch.Tensor]) -> None:
        """A call computed a row at a time (`StepPlan.burst_lag`): at the step where a row's last
        position is final, every position of the row from right to left. A graph cannot branch,
        so every step runs the row's W positions, writing to the scratch slot when no row is due."""
        width = self.plan.width
        last = q - self.plan.burst_lag[c.id]
        due = (last >= 0) & (last < self.positions) & (last.remainder(width) == width - 1)
        for j in range(width):
            p = torch.where(due, last - j, 0)
            self._store(c, compute(p, local), p, due)

    def redo(self, q: torch.Tensor) -> None:
        """The calls the output at q reads through step q's own values (`StepPlan.redo`): what must
        run again before each channel of a position with channel groups."""
        self.step(q, self.plan.redo)


class GraphedLoop:
    """Runs `body` (a closure over static buffers that advances its own position counter) `count`
    times: on CUDA as one captured graph replayed, elsewhere (and where capture fails) eagerly."""

    def __init__(self, body: Callable[[], None], device: torch.device, graphs: bool) -> None:
        self.body, self.graph = body, None
        self.use_graph = graphs and device.type == "cuda"

    def run(self, count: int) -> None:
        done = 0
        if self.use_graph and self.graph is None and count >= 3:
            done = self._capture()
        for _ in range(count - done):
            if self.graph is not None:
                self.graph.replay()
            else:
                self.body()

    def _capture(self) -> int:
        """Warm up on a side stream (two real iterations), then capture the body; the captured
        iteration has not run yet. Returns how many iterations ran."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            self.body()
            self.body()
        torch.cuda.current_stream().wait_stream(stream)
        try:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self.body()
        except RuntimeError as error:                # something in the body cannot be captured
            warnings.warn(f"cached generation runs without a CUDA graph: {error}", stacklevel=3)
            self.use_graph = False
            return 2
        self.graph = graph
        return 2
