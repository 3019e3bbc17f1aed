"""The training loop: Adam/AdamW, learning-rate schedule, gradient clipping, optional EMA, bf16
autocast on CUDA, periodic validation, best/last checkpoints, resume, Ctrl-C and NaN safety, and
DistributedDataParallel under torchrun (only rank 0 writes files)."""
from __future__ import annotations

import csv
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, TensorDataset
from tqdm import tqdm

from arspec.checkpoint import load_optimizer_state, read_checkpoint, save_checkpoint
from arspec.data.registry import Splits


class TrainingError(RuntimeError):
    """Training cannot go on (a NaN loss, say); a checkpoint of the last good state was written."""


@dataclass
class TrainConfig:
    out: Path
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "constant"
    lr_decay: float = 0.9995
    batch_size: int = 64
    epochs: int = 10
    steps: int | None = None
    grad_clip: float | None = 1.0
    ema: float | None = None
    seed: int = 0
    amp: bool = True
    validate_every: int = 1
    resample_every: int = 1
    device: str | None = None
    resume: bool = False
    limit: int | None = None
    quiet: bool = False
    backend: str = "torch"
    extra: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def from_spec(spec, out: Path, **flags: Any) -> "TrainConfig":
        t = spec.training
        values = {k: getattr(t, k) for k in ("optimizer", "lr", "weight_decay", "schedule", "lr_decay", "batch_size",
                                             "epochs", "steps", "grad_clip", "ema", "seed", "amp", "validate_every")}
        values["resample_every"] = spec.connectivity.resample_every
        values.update({k: v for k, v in flags.items() if v is not None})
        return TrainConfig(out=Path(out), **values)


class _Objective(nn.Module):
    """Mean negative log-likelihood in nats per item (what DDP wraps)."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, context: dict[str, torch.Tensor]) -> torch.Tensor:
        return -self.model.log_prob(x, **context).mean()


def _distributed() -> tuple[bool, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if world > 1:
        return True, dist.get_rank(), world
    return False, 0, 1


def _device(requested: str | None, rank: int) -> torch.device:
    if requested:
        return torch.device(requested)
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", rank))
        torch.cuda.set_device(local % torch.cuda.device_count())
        return torch.device("cuda", local % torch.cuda.device_count())
    return torch.device("cpu")


def _schedule(optimizer, config: TrainConfig, total_steps: int):
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, total_steps)))))
    if config.schedule == "exponential":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: config.lr_decay ** s)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)


@torch.no_grad()
def evaluate_nll(model, x: torch.Tensor, context: dict[str, torch.Tensor], batch_size: int = 256, ensemble: bool = False) -> float:
    """Mean negative log-likelihood in nats per item over `x`."""
    was = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size].to(model.device)
        cb = {k: v[start:start + batch_size].to(model.device) for k, v in context.items()}
        total += float(-model.log_prob(xb, ensemble=ensemble, **cb).sum())
        count += len(xb)
    model.train(was)
    return total / max(1, count)


def bits_per_dim(nats: float, elements: int) -> float:
    return nats / (elements * math.log(2))


class _EMA:
    """Exponential moving average of the weights (evaluated and checkpointed alongside)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(self.decay).add_(v.detach(), alpha=1 - self.decay)

    def swap(self, model: nn.Module) -> None:
        current = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.shadow)
        self.shadow = current


def train(spec, data: Splits, config: TrainConfig) -> dict[str, Any]:
    """Train `spec` on `data`; returns the final figures (nats and bits/dim)."""
    import arspec

    distributed, rank, world = _distributed()
    device = _device(config.device, rank)
    torch.manual_seed(config.seed)
    model = arspec.compile(spec, backend=config.backend, device=device, seed=config.seed)
    elements = int(torch.tensor(spec.event.shape).prod())
    x_train = data.train[: config.limit] if config.limit else data.train
    ctx_train = {k: (v[: config.limit] if config.limit else v) for k, v in data.context(spec, "train").items()}
    ctx_val = data.context(spec, "validation")
    dataset = TensorDataset(x_train, *ctx_train.values())
    ctx_names = list(ctx_train)
    sampler = (DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=config.seed) if distributed
               else RandomSampler(dataset, generator=torch.Generator().manual_seed(config.seed)))
    loader = DataLoader(dataset, batch_size=config.batch_size, sampler=sampler, drop_last=len(dataset) > config.batch_size * world)
    objective = _Objective(model)
    if distributed:
        objective = nn.parallel.DistributedDataParallel(objective, device_ids=[device.index] if device.type == "cuda" else None)
    opt_cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    optimizer = opt_cls(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, len(loader))
    total_steps = config.steps or config.epochs * steps_per_epoch
    scheduler = _schedule(optimizer, config, total_steps)
    ema = _EMA(model, config.ema) if config.ema else None
    use_amp = config.amp and device.type == "cuda"
    writer = rank == 0
    out = Path(config.out)
    state = {"epoch": 0, "step": 0, "best_validation_nats": None, "history": []}
    if config.resume:
        last = out / "last.safetensors"
        tensors, metadata = read_checkpoint(last)
        model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
        load_optimizer_state(last, optimizer)
        import json
        state.update(json.loads(metadata["meta"]).get("state", {}))
        for _ in range(state["step"]):
            scheduler.step()
    if writer:
        out.mkdir(parents=True, exist_ok=True)

    def checkpoint(name: str, extra: dict[str, Any] | None = None) -> None:
        if not writer:
            return
        meta = {"state": state, "data": data.name, "elements": elements, **(extra or {})}
        ema_tensors = {f"ema.{k}": v for k, v in ema.shadow.items()} if ema else None
        save_checkpoint(out / name, model, meta, optimizer, ema_tensors)

    def validate() -> float:
        if ema:
            ema.swap(model)
        nats = evaluate_nll(model, data.validation, ctx_val)
        if ema:
            ema.swap(model)
        return nats

    masks = model.num_masks
    start_time = time.time()
    try:
        while state["step"] < total_steps:
            epoch = state["epoch"]
            if distributed:
                sampler.set_epoch(epoch)
            bar = tqdm(loader, desc=f"epoch {epoch + 1}", disable=config.quiet or not writer, leave=True, dynamic_ncols=True)
            running, total, count = None, 0.0, 0
            model.train()
            for batch in bar:
                if state["step"] >= total_steps:
                    break
                if masks > 1:
                    model.select_mask(state["step"] // config.resample_every)
                xb = batch[0].to(device)
                cb = {n: t.to(device) for n, t in zip(ctx_names, batch[1:])}
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    loss = objective(xb, cb)
                if not torch.isfinite(loss):
                    checkpoint("last.safetensors", {"stopped": "non-finite loss"})
                    raise TrainingError(f"the loss became {float(loss.detach())} at step {state['step']}; the last good weights "
                                        f"are in {out / 'last.safetensors'} (try a lower lr or grad_clip)")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                scheduler.step()
                if ema:
                    ema.update(model)
                state["step"] += 1
                total += float(loss.detach())
                count += 1
                running = total / count
                bar.set_postfix(nats=f"{running:.2f}", bpd=f"{bits_per_dim(running, elements):.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
            state["epoch"] += 1
            record = {"epoch": state["epoch"], "step": state["step"], "train_nats": running}
            if state["epoch"] % config.validate_every == 0 or state["step"] >= total_steps:
                if masks > 1:
                    model.select_mask(0)
                val = validate()
                record["validation_nats"] = val
                if writer and not config.quiet:
                    tqdm.write(f"epoch {state['epoch']}: train {running:.3f} nats, validation {val:.3f} nats "
                               f"({bits_per_dim(val, elements):.4f} bits/dim)")
                best = state["best_validation_nats"]
                if best is None or val < best:
                    state["best_validation_nats"] = val
                    state["history"].append(record)
                    checkpoint("best.safetensors")
                else:
                    state["history"].append(record)
            else:
                state["history"].append(record)
            checkpoint("last.safetensors")
    except KeyboardInterrupt:
        checkpoint("last.safetensors", {"stopped": "interrupted"})
        if writer:
            print(f"\ninterrupted: saved {out / 'last.safetensors'} (continue with --resume)")
        raise
    finally:
        if writer and state["history"]:
            write_loss_curve(out, state["history"])
    if distributed:
        dist.barrier()
    result = {"steps": state["step"], "epochs": state["epoch"], "seconds": round(time.time() - start_time, 1),
              "best_validation_nats": state["best_validation_nats"], "out": str(out), "world_size": world}
    if distributed:
        dist.destroy_process_group()
    return result


def write_loss_curve(out: Path, history: list[dict[str, Any]]) -> None:
    """loss.csv and loss.png in `out`."""
    with open(out / "loss.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["epoch", "step", "train_nats", "validation_nats"])
        w.writeheader()
        for r in history:
            w.writerow({k: r.get(k) for k in w.fieldnames})
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    steps = [r["step"] for r in history]
    ax.plot(steps, [r["train_nats"] for r in history], label="train", marker="o")
    val = [(r["step"], r["validation_nats"]) for r in history if r.get("validation_nats") is not None]
    if val:
        ax.plot(*zip(*val), label="validation", marker="s")
    ax.set_xlabel("step")
    ax.set_ylabel("NLL (nats)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "loss.png")
    plt.close(fig)
