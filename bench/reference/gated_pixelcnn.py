"""A hand-written Gated PixelCNN (van den Oord et al. 2016b) for binary 1-channel images, the same
size as specs/gated_pixelcnn.yaml — the baseline for bench/train_throughput.py."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def gate(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedLayer(nn.Module):
    def __init__(self, channels: int, kernel: int, first: bool) -> None:
        super().__init__()
        c_in = 1 if first else channels
        half = kernel // 2
        self.half, self.first = half, first
        self.v = nn.Conv2d(c_in, 2 * channels, (half + 1, kernel))
        self.h = nn.Conv2d(c_in, 2 * channels, (1, half + 1))
        self.link = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        if first:   # mask A: the horizontal stack must not see the current pixel
            mask = torch.ones_like(self.h.weight)
            mask[..., -1] = 0
            self.register_buffer("h_mask", mask)

    def forward(self, v: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v_feat = self.v(F.pad(v, (self.half, self.half, self.half, 0)))
        v_down = F.pad(v_feat, (0, 0, 1, 0))[:, :, :-1]
        weight = self.h.weight * self.h_mask if self.first else self.h.weight
        h_feat = F.conv2d(F.pad(h, (self.half, 0, 0, 0)), weight, self.h.bias)
        h_out = self.out(gate(h_feat + self.link(v_down)))
        return gate(v_feat), h_out if self.first else h_out + h


class GatedPixelCNN(nn.Module):
    def __init__(self, channels: int = 32, layers: int = 5) -> None:
        super().__init__()
        self.layers = nn.ModuleList([GatedLayer(channels, 7, True)] + [GatedLayer(channels, 3, False) for _ in range(layers)])
        self.head1 = nn.Conv2d(channels, 2 * channels, 1)
        self.head2 = nn.Conv2d(2 * channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = h = x
        for layer in self.layers:
            v, h = layer(v, h)
        return self.head2(F.relu(self.head1(F.relu(h))))

    def nll(self, x: torch.Tensor) -> torch.Tensor:
        logits = self(x.float())
        return F.binary_cross_entropy_with_logits(logits, x.float(), reduction="none").flatten(1).sum(1)
