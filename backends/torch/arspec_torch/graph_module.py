"""Executes the IR as a torch module: one submodule per op node, run in topological order."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from arspec.ir.graph import IRGraph, IRNode
from arspec.runtime.layers import ConditionProjection, NodeModule


def _key(name: str) -> str:
    return name.replace(".", "__").replace("[", "_").replace("]", "_").replace("/", "-").replace("@", "_at_")


class Upsample(nn.Module):
    """Local conditioning to the event's resolution: repetition or a learned transposed convolution."""

    def __init__(self, channels: int, factor: int, mode: str, rank: int) -> None:
        super().__init__()
        self.factor, self.mode, self.rank = factor, mode, rank
        if mode == "transposed":
            if rank != 1:
                raise ValueError("transposed upsampling is implemented for sequences")
            self.conv = nn.ConvTranspose1d(channels, channels, factor, stride=factor)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        if self.mode == "transposed":
            return self.conv(c)
        for axis in range(self.rank):
            c = c.repeat_interleave(self.factor, dim=2 + axis)
        return c


class GraphModule(nn.Module):
    """forward(raw x, encoded x, context) -> the output node's tensor (distribution parameters)."""

    def __init__(self, ir: IRGraph) -> None:
        super().__init__()
        self.plan: list[tuple[str, str, list[str], bool]] = []
        self.layers = nn.ModuleDict()
        self.output = ir.output
        self.global_context: dict[str, int] = {}
        for node in ir:
            if node.kind == "context" and not node.type.spatial:
                self.global_context[node.name] = node.type.channels
            if node.kind == "upsample":
                self.layers[_key(node.name)] = Upsample(node.attrs["channels"], node.attrs["factor"], node.attrs["mode"], len(node.type.spatial))
                self.plan.append((node.name, _key(node.name), node.inputs, False))
            if node.kind != "op":
                continue
            self.layers[_key(node.name)] = self._build(node, ir)
            self.plan.append((node.name, _key(node.name), node.all_inputs, node.op.reads_raw_data))
        last_use: dict[str, int] = {}
        for step, (_, _, inputs, _) in enumerate(self.plan):
            for i in inputs:
                last_use[i] = step
        # values that may be dropped after each step (keeps peak memory at the live set)
        self.release = [[i for i, s in last_use.items() if s == step and i != self.output] for step in range(len(self.plan))]

    @staticmethod
    def _build(node: IRNode, ir: IRGraph) -> nn.Module:
        in_types = [ir.node(i).type for i in node.inputs]
        core = node.op.build(node.spec, node.attrs, in_types, node.core_type, ir.ctx)
        conds = []
        for c in node.conditions:
            ct = ir.node(c).type
            conds.append(ConditionProjection(ct.channels, node.core_type.channels, bool(ct.spatial), len(node.core_type.spatial)))
        return NodeModule(core, conds, getattr(node.spec, "activation", None), node.residual is not None)

    def forward(self, raw: torch.Tensor, x: torch.Tensor, context: dict[str, Any]) -> torch.Tensor:
        values: dict[str, torch.Tensor] = {}
        for name, c in context.items():
            if name in self.global_context:
                values[name] = torch.nn.functional.one_hot(c.long(), self.global_context[name]).to(x.dtype)
            else:
                values[f"{name}@low"] = c.to(x.dtype)
        for step, (name, key, inputs, raw_data) in enumerate(self.plan):
            args = [(raw if raw_data else x) if i == "x" else values[i] for i in inputs]
            values[name] = self.layers[key](*args)
            for i in self.release[step]:
                values.pop(i, None)
        return values[self.output] if self.output != "x" else x
