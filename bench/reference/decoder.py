"""A decoder-only transformer written by hand the usual way, the same size as
specs/transformer_text.yaml: a shifted byte embedding, learned positions, pre-norm blocks of
causal self-attention through F.scaled_dot_product_attention(is_causal=True) and a ReLU MLP."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self, width: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.q, self.k, self.v = nn.Linear(width, width), nn.Linear(width, width), nn.Linear(width, width)
        self.out = nn.Linear(width, width)
        self.ff, self.back = nn.Linear(width, hidden), nn.Linear(hidden, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, t, c = h.shape
        n = self.norm1(h)
        q, k, v = (f(n).view(b, t, self.heads, c // self.heads).transpose(1, 2) for f in (self.q, self.k, self.v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, c)
        h = h + self.out(a)
        return h + self.back(F.relu(self.ff(self.norm2(h))))


class Decoder(nn.Module):
    def __init__(self, length: int, classes: int = 256, width: int = 128, heads: int = 4, hidden: int = 512, layers: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(classes, width)
        self.position = nn.Parameter(torch.zeros(length, width))
        self.blocks = nn.ModuleList([Block(width, heads, hidden) for _ in range(layers)])
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, classes)

    def nll(self, x: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood per sequence (nats)."""
        h = F.pad(self.embed(x), (0, 0, 1, 0))[:, :-1] + self.position
        for block in self.blocks:
            h = block(h)
        logits = self.head(self.norm(h))
        return F.cross_entropy(logits.transpose(1, 2), x, reduction="none").sum(1).mean()
