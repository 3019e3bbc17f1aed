"""Torch building blocks that ops instantiate: masked convolutions and linear layers whose masks
come from the same connectivity arrays the static analysis reads."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class MaskedConv(nn.Module):
    """An N-d convolution (N = 1 or 2) with explicit asymmetric zero padding and a fixed weight mask.

    `connectivity` is (Co, Ci, *kernel) booleans; masked weights are exactly zero, so masked inputs
    contribute exact zeros."""

    def __init__(self, connectivity: np.ndarray, dilation: Sequence[int], pad_before: Sequence[int],
                 pad_after: Sequence[int], bias: bool = True) -> None:
        super().__init__()
        conn = torch.as_tensor(connectivity, dtype=torch.float32)
        self.register_buffer("mask", conn, persistent=False)
        self.weight = nn.Parameter(torch.empty(conn.shape))
        self.bias = nn.Parameter(torch.zeros(conn.shape[0])) if bias else None
        fan_in = conn.sum(dim=tuple(range(1, conn.dim()))).clamp(min=1)
        with torch.no_grad():
            self.weight.normal_()
            self.weight.mul_((1.0 / fan_in.sqrt()).view(-1, *([1] * (conn.dim() - 1))))
            self.weight.mul_(conn)
        self.dilation = tuple(int(d) for d in dilation)
        pads: list[int] = []
        for before, after in reversed(list(zip(pad_before, pad_after))):
            pads += [int(before), int(after)]
        self.pads = pads
        self.nd = conn.dim() - 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pads):
            x = F.pad(x, self.pads)
        return self.unpadded(x)

    def unpadded(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution of an already padded (or windowed) input; used by cached generation."""
        weight = self.weight * self.mask
        conv = F.conv1d if self.nd == 1 else F.conv2d
        return conv(x, weight, self.bias, dilation=self.dilation)


class MaskedLinear(nn.Module):
    """nn.Linear plus a set of masks (one per MADE mask set); `active` selects the one in use."""

    def __init__(self, masks: np.ndarray, bias: bool = True) -> None:
        super().__init__()
        m = torch.as_tensor(masks, dtype=torch.float32)  # (M, F, U)
        self.register_buffer("masks", m, persistent=False)
        self.weight = nn.Parameter(torch.randn(m.shape[1:]) / math.sqrt(max(1, m.shape[2])))
        self.bias = nn.Parameter(torch.zeros(m.shape[1])) if bias else None
        self.active = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.flatten(1), self.weight * self.masks[self.active], self.bias)


def activation(name: str | None) -> nn.Module:
    """The activation applied after an op (gated: tanh of the first half times sigmoid of the second)."""
    if name in (None, "none"):
        return nn.Identity()
    if name == "gated":
        return GatedTanh()
    return {"relu": nn.ReLU(), "elu": nn.ELU(), "tanh": nn.Tanh(), "sigmoid": nn.Sigmoid()}[name]


class GatedTanh(nn.Module):
    """tanh(a) * sigmoid(b) for the two channel halves [a, b] (van den Oord et al. 2016)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return torch.tanh(a) * torch.sigmoid(b)


class Elementwise(nn.Module):
    """Sum or product of all inputs, or an activation of a single one."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.act = activation(kind) if kind not in ("add", "multiply", "concat", "identity") else None

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        if self.kind == "add":
            out = xs[0]
            for x in xs[1:]:
                out = out + x
            return out
        if self.kind == "multiply":
            out = xs[0]
            for x in xs[1:]:
                out = out * x
            return out
        if self.kind == "concat":
            return torch.cat(xs, dim=1)
        if self.kind == "identity":
            return xs[0]
        return self.act(xs[0])


class ConditionProjection(nn.Module):
    """Projects a conditioning tensor to `channels` and broadcasts it over positions.

    Global (B, K) one-hot -> a per-channel bias; local (B, Cl, *S) -> a 1x1 convolution."""

    def __init__(self, in_channels: int, channels: int, local: bool, spatial_rank: int) -> None:
        super().__init__()
        self.local = local
        self.spatial_rank = spatial_rank
        self.proj = nn.Linear(in_channels, channels, bias=False)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        if self.local:
            return torch.movedim(self.proj(torch.movedim(c, 1, -1)), -1, 1)
        out = self.proj(c)
        return out.view(*out.shape, *([1] * self.spatial_rank))


class NodeModule(nn.Module):
    """Wraps an op's core module with what every node may add: conditioning, an activation, a residual.

    y = activation(core(inputs) + sum of condition projections) + residual"""

    def __init__(self, core: nn.Module, conditions: list[nn.Module], act: str | None, residual: bool) -> None:
        super().__init__()
        self.core = core
        self.conditions = nn.ModuleList(conditions)
        self.act = activation(act)
        self.has_residual = residual

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        n_cond = len(self.conditions)
        n_main = len(inputs) - n_cond - int(self.has_residual)
        y = self.core(*inputs[:n_main])
        for proj, c in zip(self.conditions, inputs[n_main:n_main + n_cond]):
            y = y + proj(c)
        y = self.act(y)
        if self.has_residual:
            y = y + inputs[-1]
        return y
