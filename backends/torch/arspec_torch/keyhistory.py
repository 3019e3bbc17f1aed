"""Attention in the step engines: which keys an attention reads at each position of a
raster-ordered event (`KeyHistory`, from the kernels' rule, so the engines read exactly the tokens
the training graph's mask allows), and one position's attention on the numpy step's values
(`attend_rows`). The C step, the static program and the torch path read the same history.
Imports nothing from arspec: generated standalone files carry a copy."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from arspec_torch.kernels import attention_allowed


def attention_op(call: Any, data_groups: int) -> Any:
    """The attention of a call's step, when it attends once over tokens the engines follow (one
    per position, or one per data channel group); None otherwise."""
    ops = [op for op in call.step.ops if op.kind == "attend"] if call.step is not None else []
    return ops[0] if len(ops) == 1 and ops[0].groups in (1, data_groups) else None


def history_of(call: Any, data_groups: int, spatial: tuple[int, ...]) -> KeyHistory | None:
    """The key history of a call's attention (None: it has none the engines follow)."""
    op = attention_op(call, data_groups)
    return None if op is None else KeyHistory(op, data_groups, spatial)


class KeyHistory:
    """Which keys an attention reads at each position of a raster-ordered event: the key positions
    lo[p]..hi[p]-1, and where not every token among them, a (G, L, G) mask of the allowed ones
    (query group, key position, key group). Tokens and ranks follow arspec.domains.pattern."""

    #: booleans of the allowed-token table built at a time (a block of query positions): memory
    #: bounded at any event size, where the whole (T, T) table of a 64 x 64 R->G->B image is 151 MB
    BLOCK = 1 << 22

    def __init__(self, op: Any, data_groups: int, spatial: tuple[int, ...]) -> None:
        positions, groups = int(np.prod(spatial)), op.groups
        order = np.arange(positions)[None, :] * data_groups + np.arange(data_groups)[:, None]
        query, key = (order.min(axis=0), order.max(axis=0)) if groups == 1 else (order.T.reshape(-1), order.T.reshape(-1))
        coords = np.stack(np.unravel_index(np.arange(positions), spatial), axis=1)
        causal, window, stride, chunk = op.rule
        query, key, coords = torch.as_tensor(query), torch.as_tensor(key), torch.as_tensor(coords)
        self.lo, self.hi = np.zeros(positions, dtype=np.int64), np.zeros(positions, dtype=np.int64)
        self.masks: list[np.ndarray | None] = []
        some = np.zeros(positions, dtype=bool)
        #: per position: some query token there has two allowed keys or more, so its scores (hence
        #: its query) matter; with one key the weight is 1, with none the value is 0 (the domains' rule)
        self.scored = np.zeros(positions, dtype=bool)
        step = max(1, self.BLOCK // max(1, positions * groups * groups))     # positions per block of the allowed table
        for start in range(0, positions, step):
            stop = min(positions, start + step)
            block = attention_allowed(query, key, coords, groups=groups, causal=causal, window=window, stride=stride, chunk=chunk,
                                      queries=slice(start * groups, stop * groups)).numpy()
            by_position = block.reshape(stop - start, groups, positions, groups)
            reads = by_position.any(axis=(1, 3))                               # position p reads position l
            found = reads.any(axis=1)
            self.scored[start:stop] = (by_position.sum(axis=(2, 3)) >= 2).any(axis=1)
            some[start:stop] = found
            self.lo[start:stop] = np.where(found, reads.argmax(axis=1), 0)
            self.hi[start:stop] = np.where(found, positions - reads[:, ::-1].argmax(axis=1), 0)
            for i in range(stop - start):
                rows = by_position[i][:, self.lo[start + i]:self.hi[start + i]]
                self.masks.append(None if rows.all() else np.ascontiguousarray(rows))
        #: the latest key position relative to the query's (flat), over every position; None: no keys
        self.latest = int((self.hi - 1 - np.arange(positions))[some].max()) if some.any() else None
        self.groups, self.heads = groups, op.heads

    def positions_read(self, p: int) -> np.ndarray:
        """The key positions position p reads at all."""
        span = np.arange(self.lo[p], self.hi[p])
        mask = self.masks[p]
        return span if mask is None else span[mask.any(axis=(0, 2))]

    def finality(self, query: np.ndarray, keys: np.ndarray, values: np.ndarray) -> np.ndarray:
        """The last position the attention at each position reads (max-plus over the keys and values
        of every position it reads, and the query at the position where its scores matter)."""
        kv = np.maximum(keys, values).reshape(-1)
        out = np.where(self.scored, query.reshape(-1), -np.inf)
        for p in range(out.size):
            read = self.positions_read(p)
            if len(read):
                out[p] = max(out[p], kv[read].max())
        return out.reshape(query.shape)


def attend_rows(query: np.ndarray, keys: np.ndarray, values: np.ndarray, mask: np.ndarray | None, heads: int,
                groups: int) -> np.ndarray:
    """One position's attention on channel-major values: query (C, B), keys (L, C, B) and values
    (L, Cv, B) of its L key positions, `mask` (G, L, G) the allowed tokens (None: all) -> (Cv, B).
    Channel j is in group j mod G and head (j // G) // d, as the training kernel lays them out."""
    length, channels, batch = keys.shape
    if length == 0:
        return np.zeros((values.shape[1], batch), dtype=values.dtype)
    d, dv = channels // (heads * groups), values.shape[1] // (heads * groups)
    scores = np.einsum("hdgb,lhdkb->hglkb", query.reshape(heads, d, groups, batch),
                       keys.reshape(length, heads, d, groups, batch)) * (1.0 / np.sqrt(d))
    if mask is not None:
        scores = np.where(mask[None, :, :, :, None], scores, -np.inf)
    scores = scores.reshape(heads, groups, length * groups, batch)
    top = scores.max(axis=2, keepdims=True)
    none = ~np.isfinite(top)                                      # a query group with no allowed key: exactly zero
    weights = np.exp(scores - np.where(none, 0.0, top))
    weights /= np.where(none, 1.0, weights.sum(axis=2, keepdims=True))
    out = np.einsum("hglkb,lhdkb->hdgb", weights.reshape(heads, groups, length, groups, batch),
                    values.reshape(length, heads, dv, groups, batch))
    return out.reshape(heads * dv * groups, batch).astype(values.dtype, copy=False)
