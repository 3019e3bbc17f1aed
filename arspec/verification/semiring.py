"""The two algebras the recorded forward pass is replayed in.

`MaxSemiring`: a value is the latest step any of its inputs was drawn at (-inf: it reads no data).
Combining takes the maximum, reducing over axes the maximum, a contraction the maximum over the
terms its weights do not force to zero. One pass gives, for every element of the output, the latest
element it reads: the autoregressive check of every element at once.

`LinearSemiring`: a value is a nonnegative weight; combining adds, reducing sums, a contraction
multiplies by 0/1 masks (normalised). The output is then a linear function of the input weights
with nonnegative coefficients, so d out[e] / d in[j] > 0 exactly when e reads j: one backward pass
(autograd) gives the whole set of elements one output element reads (its dependency field)."""
from __future__ import annotations

import math

import torch


class MaxSemiring:
    none = -math.inf
    name = "max"

    @staticmethod
    def plus(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.maximum(a, b)

    @staticmethod
    def reduce(t: torch.Tensor, dims: tuple[int, ...], keepdim: bool = False) -> torch.Tensor:
        if t.dim() == 0 or not dims:
            return t
        if t.numel() == 0:
            shape = [1 if d in [x % t.dim() for x in dims] else s for d, s in enumerate(t.shape)]
            out = torch.full(shape, MaxSemiring.none, dtype=t.dtype)
            return out if keepdim else out.squeeze(tuple(x % t.dim() for x in dims))
        return t.amax(dim=dims, keepdim=keepdim)

    @staticmethod
    def prefix(t: torch.Tensor, dim: int) -> torch.Tensor:
        return torch.cummax(t, dim=dim).values

    @staticmethod
    def masked_reduce(values: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """values (..., K), allowed (J, K) bool -> (..., J): max over the allowed k of each j
        (all allowed: one maximum; prefixes, as causal masks: a running maximum; few distinct rows,
        as masked weights: one maximum per row; otherwise in chunks of rows)."""
        none = MaxSemiring.none
        j, k = allowed.shape
        if bool(allowed.all()):
            return values.amax(-1, keepdim=True).expand(*values.shape[:-1], j)
        counts = allowed.sum(-1)
        if k and bool((allowed == (torch.arange(k) < counts[:, None])).all()):          # prefixes
            running = torch.cummax(values, dim=-1).values
            picked = running.index_select(-1, (counts - 1).clamp(min=0))
            return torch.where(counts > 0, picked, torch.full_like(picked, none))
        rows, inverse = torch.unique(allowed, dim=0, return_inverse=True)
        if rows.shape[0] <= 64:
            out = torch.full((*values.shape[:-1], rows.shape[0]), none, dtype=values.dtype)
            for u in range(rows.shape[0]):
                keep = rows[u].nonzero().flatten()
                if len(keep):
                    out[..., u] = values.index_select(-1, keep).amax(-1)
            return out.index_select(-1, inverse)
        lead = values.shape[:-1]
        flat = values.reshape(-1, k)
        step = max(1, (1 << 24) // max(1, flat.shape[0] * k))
        parts = []
        for start in range(0, j, step):
            block = allowed[start:start + step]                                         # (J', K)
            masked = torch.where(block[None], flat[:, None, :], torch.full((), none, dtype=values.dtype))
            parts.append(masked.amax(-1))
        return torch.cat(parts, dim=-1).reshape(*lead, j)


class LinearSemiring:
    none = 0.0
    name = "linear"

    @staticmethod
    def plus(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b

    @staticmethod
    def reduce(t: torch.Tensor, dims: tuple[int, ...], keepdim: bool = False) -> torch.Tensor:
        if t.dim() == 0 or not dims:
            return t
        return t.sum(dim=dims, keepdim=keepdim)

    @staticmethod
    def prefix(t: torch.Tensor, dim: int) -> torch.Tensor:
        return torch.cumsum(t, dim=dim)

    @staticmethod
    def masked_reduce(values: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """values (..., K), allowed (J, K) bool -> (..., J): the mean over the allowed k of each j
        (a mean keeps the weights bounded through deep stacks; zero where none is allowed)."""
        weights = allowed.to(values.dtype)
        weights = weights / weights.sum(-1, keepdim=True).clamp(min=1)
        return values @ weights.t()


Semiring = type[MaxSemiring] | type[LinearSemiring]
