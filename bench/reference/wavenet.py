"""WaveNet written by hand the usual way, the same size as specs/wavenet.yaml: a shifted embedding,
30 gated residual layers of dilated causal convolutions (left padding) with skip connections
accumulated as they come, and a 256-way softmax head."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class WaveNet(nn.Module):
    def __init__(self, classes: int = 256, residual: int = 64, gate: int = 128, skip: int = 256,
                 dilations: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) * 3) -> None:
        super().__init__()
        self.dilations = dilations
        self.embed = nn.Embedding(classes, residual)
        self.filters = nn.ModuleList([nn.Conv1d(residual, gate, 2, dilation=d) for d in dilations])
        self.residuals = nn.ModuleList([nn.Conv1d(gate // 2, residual, 1) for _ in dilations])
        self.skips = nn.ModuleList([nn.Conv1d(gate // 2, skip, 1) for _ in dilations])
        self.head1, self.head2 = nn.Conv1d(skip, skip, 1), nn.Conv1d(skip, classes, 1)

    def nll(self, x: torch.Tensor) -> torch.Tensor:
        h = F.pad(self.embed(x).transpose(1, 2), (1, 0))[:, :, :-1]
        skip = 0
        for d, filt, res, sk in zip(self.dilations, self.filters, self.residuals, self.skips):
            a, b = filt(F.pad(h, (d, 0))).chunk(2, dim=1)
            z = torch.tanh(a) * torch.sigmoid(b)
            h = h + res(z)
            skip = skip + sk(z)
        logits = self.head2(F.relu(self.head1(F.relu(skip))))
        return F.cross_entropy(logits, x, reduction="none").sum(1).mean()
