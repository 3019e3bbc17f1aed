"""The interpreter: a module that runs the plan's calls in order, each through its kernel.
Parameters and buffers are registered under their canonical names (`<node>__<call>__<name>`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from arspec_torch.cache import StepCall, run_call
from arspec_torch.convgroups import ConvGroup, conv_groups, group_applies, run_group
from arspec_torch.fusion import fuse
from arspec_torch.kernels import init_parameter, nade_chain
from arspec_torch.plan import Plan

NADE_CHAIN = ("ordered_prefix_linear", "element_scale", "activation", "element_linear")


def nade_chains(calls: list[StepCall], kept: set[str]) -> dict[int, list[StepCall]]:
    """By the index of its first call: each run of calls forming NADE's chain (prefix, optional
    rescaling, activation, read-out), every intermediate value read only by the next call and not
    kept, so the chain can run as one blocked kernel (`kernels.nade_chain`)."""
    readers: dict[str, int] = {}
    for c in calls:
        for a in c.args:
            readers[a] = readers.get(a, 0) + 1
    chains = {}
    for i, first in enumerate(calls):
        if first.kind != NADE_CHAIN[0]:
            continue
        chain = [first]
        for kind in NADE_CHAIN[1:]:
            j = i + len(chain)
            if j < len(calls) and calls[j].kind == kind and calls[j].args == (chain[-1].id,):
                chain.append(calls[j])
            elif kind != "element_scale":
                break
        if [c.kind for c in chain][-1] == "element_linear" and all(readers.get(c.id) == 1 and c.id not in kept for c in chain[:-1]):
            chains[i] = chain
    return chains


@dataclass(frozen=True)
class Segment:
    """Calls start..stop-1, one iteration of a repeated block: the values they read from before
    (`inputs`) and the values later calls read (`outputs`)."""

    start: int
    stop: int
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def repeat_segments(calls: list[StepCall], node_of: dict[str, str], kept: set[str]) -> list[Segment]:
    """The runs of consecutive calls that belong to one iteration of a repeated node or block
    (node names `stack[3]` or `stack[3].filt`), in order."""
    def iteration(call: StepCall) -> str | None:
        name = node_of.get(call.id, "")
        return name[:name.index("]") + 1] if "[" in name else None
    runs: list[tuple[int, int]] = []
    for k, call in enumerate(calls):
        key = iteration(call)
        if key is not None and runs and iteration(calls[runs[-1][1] - 1]) == key and runs[-1][1] == k:
            runs[-1] = (runs[-1][0], k + 1)
        elif key is not None:
            runs.append((k, k + 1))
    segments = []
    for start, stop in runs:
        inside = {c.id for c in calls[start:stop]}
        inputs = tuple(dict.fromkeys(a for c in calls[start:stop] for a in c.args if a not in inside))
        later = {a for c in calls[stop:] for a in c.args} | kept
        outputs = tuple(c.id for c in calls[start:stop] if c.id in later)
        if outputs:
            segments.append(Segment(start, stop, inputs, outputs))
    return segments


class Network(nn.Module):
    """forward(raw x, encoded x, context) -> the output value (distribution parameters). `taps`
    names further nodes whose values `forward_taps` returns too (a part read by another part)."""

    def __init__(self, plan: Plan, taps: tuple[str, ...] = (), rewrite: bool = True) -> None:
        super().__init__()
        self.output = plan.output
        self.taps = {name: plan.node_values[name] for name in taps}
        kept = {self.output, *self.taps.values()}
        calls = [pc.step for pc in plan.calls]
        self.calls = fuse(calls, kept) if rewrite else calls      # `rewrite=False`: the plan's calls as they are
        self.contexts = plan.contexts
        self.mask_sets = plan.mask_sets
        self.active = 0
        for pc in plan.calls:
            for name, param in pc.params.items():
                t = nn.Parameter(torch.empty(param.shape))
                init_parameter(t, param.init, param.scale)
                self.register_parameter(f"{pc.step.id}__{name}", t)
            for name, array in pc.buffers.items():
                value = torch.as_tensor(array)
                self.register_buffer(f"{pc.step.id}__{name}", value.float() if value.dtype == torch.bool else value, persistent=False)
        last_use: dict[str, int] = {}
        for i, call in enumerate(self.calls):
            for a in call.args:
                last_use[a] = i
        # values that may be dropped after each call (keeps peak memory at the live set)
        self.release = [[a for a, s in last_use.items() if s == i and a not in kept] for i in range(len(self.calls))]
        self.chains = nade_chains(self.calls, kept)      # emptied, the calls run one by one (the tests compare both)
        self.groups = conv_groups(self.calls, kept, self) if rewrite else {}   # the C pass without gradients (emptied: torch)
        self.segments = repeat_segments(self.calls, {pc.step.id: pc.node.name for pc in plan.calls}, kept)
        #: recompute each repeated block's values in the backward pass instead of keeping them (training)
        self.checkpointing = False

    def context_values(self, context: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """Context inputs by value id: global ones one-hot encoded, local ones as given."""
        out = {}
        for c in self.contexts:
            value = context[c.name]
            out[c.id] = F.one_hot(value.long(), c.size).to(dtype) if c.kind == "global" else value.to(dtype)
        return out

    def forward(self, raw: torch.Tensor, x: torch.Tensor, context: dict[str, Any]) -> torch.Tensor:
        return self._run(raw, x, context)[self.output]

    def forward_taps(self, raw: torch.Tensor, x: torch.Tensor, context: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The output and the value of every tapped node, by node name."""
        values = self._run(raw, x, context)
        return values[self.output], {name: values[vid] for name, vid in self.taps.items()}

    def _run(self, raw: torch.Tensor, x: torch.Tensor, context: dict[str, Any]) -> dict[str, torch.Tensor]:
        values: dict[str, torch.Tensor] = {"x": x, "x_raw": raw, **self.context_values(context, x.dtype)}
        if self.checkpointing and torch.is_grad_enabled():
            return self._run_checkpointed(values)
        i = 0
        while i < len(self.calls):
            chain = self.chains.get(i)
            group = self.groups.get(i)
            if chain is not None:
                values[chain[-1].id] = self._nade_chain(chain, values[chain[0].args[0]])
                done = range(i, i + len(chain))
            elif group is not None and (out := self._conv_group(group, values)) is not None:
                values[group.output] = out
                done = range(i, group.stop)
            else:
                call = self.calls[i]
                values[call.id] = run_call(call, self, [values[a] for a in call.args])
                done = range(i, i + 1)
            for k in done:
                for a in self.release[k]:
                    values.pop(a, None)
            i = done.stop
        return values

    def _run_checkpointed(self, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The calls with every repeated block's calls under torch.utils.checkpoint: only what
        crosses a block's boundary is kept; the rest is recomputed in the backward pass (with the
        random state it had, so dropout draws the same)."""
        from torch.utils.checkpoint import checkpoint
        i = 0
        for segment in self.segments:
            for k in range(i, segment.start):
                self._call_one(k, values)
            inputs = [values[a] for a in segment.inputs]

            def block(*args: torch.Tensor, segment: Segment = segment) -> tuple[torch.Tensor, ...]:
                local = dict(zip(segment.inputs, args))
                for k in range(segment.start, segment.stop):
                    call = self.calls[k]
                    local[call.id] = run_call(call, self, [local[a] if a in local else values[a] for a in call.args])
                return tuple(local[o] for o in segment.outputs)
            for name, value in zip(segment.outputs, checkpoint(block, *inputs, use_reentrant=False)):
                values[name] = value
            i = segment.stop
        for k in range(i, len(self.calls)):
            self._call_one(k, values)
        return values

    def _call_one(self, k: int, values: dict[str, torch.Tensor]) -> None:
        call = self.calls[k]
        values[call.id] = run_call(call, self, [values[a] for a in call.args])
        for a in self.release[k]:
            values.pop(a, None)

    def _conv_group(self, group: ConvGroup, values: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """A group's value through the C pass, or None when it does not apply here (checked first:
        a float64 or training pass computes nothing twice)."""
        if not group_applies(group, values):
            return None
        project = None
        if group.context is not None:
            project = run_call(group.context, self, [values[a] for a in group.context.args])
        return run_group(group, self, values, project)

    def _nade_chain(self, chain: list[StepCall], x: torch.Tensor) -> torch.Tensor:
        """NADE's chain of calls in one blocked kernel, from the calls' own parameters."""
        prefix, readout = chain[0], chain[-1]
        scale = next((getattr(self, f"{c.id}__scale") for c in chain if c.kind == "element_scale"), None)
        fn = next(c.attrs["fn"] for c in chain if c.kind == "activation")
        return nade_chain(x, getattr(self, f"{prefix.id}__weight"), getattr(self, f"{prefix.id}__bias"),
                          getattr(self, f"{prefix.id}__perms"), getattr(self, f"{readout.id}__weight"),
                          getattr(self, f"{readout.id}__bias"), scale, fn=fn, active=int(self.active))
