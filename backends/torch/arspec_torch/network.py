"""The interpreter: a module that runs the plan's calls in order, each through its kernel.
Parameters and buffers are registered under their canonical names (`<node>__<call>__<name>`)."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from arspec_torch.cache import run_call
from arspec_torch.kernels import init_parameter
from arspec_torch.plan import Plan


class Network(nn.Module):
    """forward(raw x, encoded x, context) -> the output value (distribution parameters). `taps`
    names further nodes whose values `forward_taps` returns too (a part read by another part)."""

    def __init__(self, plan: Plan, taps: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.calls = [pc.step for pc in plan.calls]
        self.output = plan.output
        self.taps = {name: plan.node_values[name] for name in taps}
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
        kept = {self.output, *self.taps.values()}
        self.release = [[a for a, s in last_use.items() if s == i and a not in kept] for i in range(len(self.calls))]

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
        for call, release in zip(self.calls, self.release):
            values[call.id] = run_call(call, self, [values[a] for a in call.args])
            for a in release:
                values.pop(a, None)
        return values
