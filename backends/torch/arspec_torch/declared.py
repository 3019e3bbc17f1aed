"""Primitives declared by their step (arspec.primitives.step), lowered to torch: the whole-tensor
kernel is the step evaluated at every position at once, or, for a primitive that reads its own
values elsewhere, scanned along its wavefronts (a front's positions read no state of each other:
one batched step per front, 2H - 1 fronts for an H x W Spatial LSTM); the cached sampler's step is
the same evaluation at the positions it computes. No primitive-specific code: adding a declared
primitive adds nothing here. Imports nothing from arspec (generated files carry a copy)."""
from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

ACTIVATIONS = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu, "elu": torch.nn.functional.elu,
               "identity": lambda x: x}


def evaluate(program: Any, tensors: dict[str, torch.Tensor], read: Any, state: Any, gather: Any = None,
             attend: Any = None, inside: Any = None) -> torch.Tensor:
    """The step's output for a set of positions: `read(arg, offset)` and `state(offset)` give the
    operands as (B, C, n) tensors; products, activations, sums and channel ranges follow the IR.
    `gather(arg, offsets)` reads a gather's taps at once (default: read by read, side by side);
    `attend(op, query)` is an attention's value at the positions (it needs the keys' history:
    only the cached sampler has one); `inside(offset)` is (n,): 1 where p + offset is inside."""
    values: list[torch.Tensor] = []
    for op in program.ops:
        kind = op.kind
        if kind == "read":
            values.append(read(op.arg, op.offset))
        elif kind == "gather":
            values.append(gather(op.arg, op.offsets) if gather is not None else torch.cat([read(op.arg, off) for off in op.offsets], dim=1))
        elif kind == "embed":                                        # levels (B, G, n) -> (B, C, n)
            levels = read(op.arg, (0,) * program.rank).long()
            table = tensors[op.weight] * tensors[op.mask][:, None, :] if op.mask else tensors[op.weight]   # (G, K, C)
            looked = sum(table[g][levels[:, g]] for g in range(table.shape[0]))                         # (B, n, C)
            values.append(looked.transpose(1, 2))
        elif kind == "state":
            values.append(state(op.offset))
        elif kind == "inside":
            flags = inside(op.offset)
            values.append(flags.view(1, 1, -1))
        elif kind == "product":
            x = torch.cat([values[i] for i in op.inputs], dim=1) if len(op.inputs) > 1 else values[op.inputs[0]]
            weight = op.matrix(tensors[op.weight] * tensors[op.mask] if op.mask else tensors[op.weight])
            y = torch.einsum("oc,bcn->bon", weight.to(x.dtype), x)
            values.append(y + tensors[op.bias][None, :, None] if op.bias else y)
        elif kind == "act":
            values.append(ACTIVATIONS[op.fn](values[op.inputs[0]]))
        elif kind in ("add", "mul"):
            out = values[op.inputs[0]]
            for i in op.inputs[1:]:
                out = out + values[i] if kind == "add" else out * values[i]
            values.append(out)
        elif kind == "concat":
            values.append(torch.cat([values[i] for i in op.inputs], dim=1))
        elif kind == "gate":
            value, half = values[op.inputs[0]], op.channels
            values.append(torch.tanh(value[:, :half]) * torch.sigmoid(value[:, half:]))
        elif kind == "pick":
            values.append(values[op.inputs[0]][:, list(op.index)])
        elif kind == "norm":                                         # channels of group g: j = g mod G
            x = values[op.inputs[0]]
            grouped = x.reshape(x.shape[0], -1, op.groups, x.shape[2])
            normal = torch.nn.functional.layer_norm(grouped.movedim(1, -1), (grouped.shape[1],), None, None, 1e-5).movedim(-1, 1)
            values.append(normal.reshape(x.shape) * tensors[op.weight][None, :, None] + tensors[op.bias][None, :, None])
        elif kind == "attend":
            if attend is None:
                raise ValueError("an attention reads its keys' whole history: the cached samplers lower it (keyhistory.KeyHistory); "
                                 "the whole-tensor kernel is its primitive's")
            values.append(attend(op, values[op.inputs[0]]))
        else:                                                        # slice
            values.append(values[op.inputs[0]][:, op.start:op.start + op.channels])
    return values[program.output]


@functools.lru_cache(maxsize=64)
def tap_table(offset: tuple[int, ...], spatial: tuple[int, ...]) -> torch.Tensor:
    """(P,) flat index of p + offset for every position p, P where it falls outside."""
    positions = int(np.prod(spatial))
    coords = np.stack(np.unravel_index(np.arange(positions), spatial), axis=1) + np.array(offset)
    inside = ((coords >= 0) & (coords < np.array(spatial))).all(axis=1)
    table = np.full(positions, positions, dtype=np.int64)
    table[inside] = np.ravel_multi_index(tuple(coords[inside].T), spatial)
    return torch.as_tensor(table)


@functools.lru_cache(maxsize=64)
def wavefronts(offsets: tuple[tuple[int, ...], ...], spatial: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    """The positions of each front, in order: a position's front is one past the latest front of
    the positions whose state it reads. The state offsets point earlier in some raster order (the
    declaration checks it: to the left or to the right, above), so the fronts are found by
    relaxing every position at once until nothing changes, at most once per front."""
    positions = int(np.prod(spatial))
    front = np.zeros(positions + 1, dtype=np.int64)            # the last entry: reads outside, front -1 + 1
    tables = [tap_table(o, spatial).numpy() for o in offsets]
    for _ in range(positions + 1):
        reads = np.max([np.where(t < positions, front[t], -1) for t in tables], axis=0) + 1
        if np.array_equal(reads, front[:positions]):
            break
        front[:positions] = reads
    else:
        raise ValueError(f"state offsets {list(offsets)} read each other in a cycle")
    return tuple(torch.as_tensor(np.flatnonzero(front[:positions] == f)) for f in range(int(front[:positions].max()) + 1))


def scan_order(offsets: tuple[tuple[int, ...], ...], spatial: tuple[int, ...]) -> np.ndarray:
    """Every position, in an order where each comes after the positions whose state it reads
    (front by front, raster order within a front)."""
    return np.concatenate([f.numpy() for f in wavefronts(offsets, spatial)])


@functools.lru_cache(maxsize=64)
def scan_rank(offsets: tuple[tuple[int, ...], ...], spatial: tuple[int, ...]) -> np.ndarray:
    """(P,): each position's place in `scan_order` (sorting a few positions by it orders them)."""
    rank = np.empty(int(np.prod(spatial)), dtype=np.int64)
    rank[scan_order(offsets, spatial)] = np.arange(rank.size)
    return rank


def inside_flags(offset: tuple[int, ...], spatial: tuple[int, ...], at: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(n,): 1 where position at[i] + offset lies inside the event, else 0."""
    return (tap_table(offset, spatial).to(at.device)[at] < int(np.prod(spatial))).to(dtype)


def flat(x: torch.Tensor) -> torch.Tensor:
    """(B, C, *S) -> (B, C, P + 1), the last slot a zero standing for every read outside."""
    b, c = x.shape[:2]
    return torch.cat([x.reshape(b, c, -1), x.new_zeros(b, c, 1)], dim=2)


def declared(*args: torch.Tensor, program: Any, **tensors: torch.Tensor) -> torch.Tensor:
    """The whole-tensor kernel of a declared primitive: args (B, C_i, *S) -> (B, C_out, *S)."""
    spatial = tuple(args[0].shape[2:])
    sources = [flat(a) for a in args]
    out_channels = program.ops[program.output].channels
    every = torch.arange(sources[0].shape[2] - 1, device=args[0].device)

    offsets = program.state_offsets
    if not offsets:
        value = evaluate(program, tensors, lambda arg, offset: sources[arg][:, :, tap_table(offset, spatial).to(every.device)[every]],
                         None, inside=lambda offset: inside_flags(offset, spatial, every, sources[0].dtype))
        return value.reshape(value.shape[0], value.shape[1], *spatial)
    fronts = front_plan(offsets, spatial)
    device = args[0].device
    dtype = torch.result_type(sources[0], next(iter(tensors.values()))) if tensors else sources[0].dtype
    gathered: dict[tuple[int, tuple[int, ...]], tuple[torch.Tensor, ...]] = {}
    values: list[torch.Tensor] = []                    # each front's output, (B, C, n_f), in front order
    for f in range(len(fronts.sizes)):
        def read(arg: int, offset: tuple[int, ...], f: int = f) -> torch.Tensor:
            """The argument at p + offset for the front's positions: gathered once for every position
            in front order and split (one gather, one split in the backward, not one per front)."""
            key = (arg, offset)
            if key not in gathered:
                table = tap_table(offset, spatial)[fronts.order].to(device)
                gathered[key] = torch.split(sources[arg][:, :, table], fronts.sizes, dim=2)
            return gathered[key][f]

        def state(offset: tuple[int, ...], f: int = f) -> torch.Tensor:
            """Its own value at p + offset: gathered from the few earlier fronts it lies on (and a
            zero column for reads outside), so the backward stays as small as the fronts."""
            source, index = fronts.reads[f][offset]
            zero = values[0].new_zeros(values[0].shape[0], out_channels, 1) if values else None
            if not source or zero is None:
                return sources[0].new_zeros(sources[0].shape[0], out_channels, fronts.sizes[f])
            return torch.cat([values[g] for g in source] + [zero], dim=2)[:, :, index.to(device)]
        at = fronts.positions[f].to(device)
        values.append(evaluate(program, tensors, read, state, inside=lambda offset, at=at: inside_flags(offset, spatial, at, dtype)))
    out = torch.cat(values, dim=2)[:, :, fronts.inverse.to(device)]                  # back to raster order
    return out.reshape(out.shape[0], out_channels, *spatial)


class FrontPlan:
    """The wavefronts of a state-reading step and where each front's state reads land: per front
    and state offset, the earlier fronts read and the index into their concatenation (the last
    column a zero for reads outside)."""

    def __init__(self, offsets: tuple[tuple[int, ...], ...], spatial: tuple[int, ...]) -> None:
        fronts = [f.numpy() for f in wavefronts(offsets, spatial)]
        positions = int(np.prod(spatial))
        front_of, slot = np.empty(positions, dtype=np.int64), np.empty(positions, dtype=np.int64)
        for f, at in enumerate(fronts):
            front_of[at], slot[at] = f, np.arange(len(at))
        self.sizes = [len(at) for at in fronts]
        self.positions = tuple(torch.as_tensor(at) for at in fronts)
        self.order = torch.as_tensor(np.concatenate(fronts))
        self.inverse = torch.as_tensor(np.argsort(np.concatenate(fronts)))
        self.reads: list[dict[tuple[int, ...], tuple[tuple[int, ...], torch.Tensor]]] = []
        for at in fronts:
            per_offset = {}
            for offset in offsets:
                source = tap_table(offset, spatial).numpy()[at]
                inside = source < positions
                read = tuple(sorted(set(front_of[source[inside]].tolist())))
                start = dict(zip(read, np.cumsum([0] + [self.sizes[g] for g in read]).tolist()))
                index = np.full(len(at), sum(self.sizes[g] for g in read), dtype=np.int64)
                index[inside] = [start[int(front_of[q])] + int(slot[q]) for q in source[inside]]
                per_offset[offset] = (read, torch.as_tensor(index))
            self.reads.append(per_offset)


@functools.lru_cache(maxsize=64)
def front_plan(offsets: tuple[tuple[int, ...], ...], spatial: tuple[int, ...]) -> FrontPlan:
    return FrontPlan(offsets, spatial)
