"""The order of training items: a permutation per epoch derived from (seed, epoch) alone, sharded
across processes, so that a run resumed at any step sees exactly the batches an uninterrupted
run would have seen."""
from __future__ import annotations

import torch


def epoch_order(n: int, epoch: int, seed: int, shuffle: bool) -> torch.Tensor:
    """The items of one epoch, in order: a fresh permutation per epoch (or 0..n-1)."""
    if not shuffle:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def epoch_batches(n: int, batch_size: int, epoch: int, seed: int, shuffle: bool, rank: int = 0, world: int = 1) -> list[torch.Tensor]:
    """This process's batches of one epoch. With several processes, global batch k is the k-th
    block of batch_size * world items of the epoch's order, dealt out round-robin; an incomplete
    last block is dropped when there is at least one complete one."""
    order = epoch_order(n, epoch, seed, shuffle)
    block = batch_size * world
    blocks = n // block if n >= block else 1
    out = []
    for k in range(blocks):
        items = order[k * block:(k + 1) * block]
        mine = items[rank::world]
        if len(mine):
            out.append(mine)
    return out
