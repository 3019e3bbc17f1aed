"""The training loop: Adam/AdamW, learning-rate schedule, gradient clipping, optional EMA, bf16
autocast on CUDA, periodic validation, best/last checkpoints, resume, Ctrl-C and NaN safety, and
DistributedDataParallel under torchrun (only rank 0 writes files)."""
from __future__ import annotations

import csv
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from pydantic import ConfigDict
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler, TensorDataset
from tqdm import tqdm

from arspec.checkpoint import load_optimizer_state, load_scheduler_state, read_checkpoint, save_checkpoint
from arspec.data.registry import Splits
from arspec.spec.models import TrainingSpec


class TrainingError(RuntimeError):
    """Training cannot go on (a NaN loss, say); a checkpoint of the last good state was written."""


class TrainConfig(TrainingSpec):
    """The spec's `training` section (every field a default that flags and --set override) plus
    the options of one run."""

    model_config = ConfigDict(extra="forbid")

    out: Path
    resample_every: int = 1
    device: str | None = None
    resume: bool = False
    limit: int | None = None
    quiet: bool = False
    backend: str = "torch"

    @classmethod
    def from_spec(cls, spec: Any, out: Path | str, **flags: Any) -> TrainConfig:
        values = spec.training.model_dump()
        values["resample_every"] = spec.connectivity.resample_every
        values.update({k: v for k, v in flags.items() if v is not None})
        return cls(out=Path(out), **values)


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


class _Run:
    """One training run: the model, its optimizer, schedule and EMA, the data loader, and the
    bookkeeping that checkpoints and resumes it."""

    def __init__(self, spec: Any, data: Splits, config: TrainConfig) -> None:
        import arspec

        self.spec, self.data, self.config = spec, data, config
        self.distributed, self.rank, self.world = _distributed()
        self.device = _device(config.device, self.rank)
        torch.manual_seed(config.seed)
        self.model = arspec.compile(spec, backend=config.backend, device=self.device, seed=config.seed)
        self.elements = int(torch.tensor(spec.event.shape).prod())
        self.loader, self.sampler, self.context_names = self._loader()
        self.objective: nn.Module = _Objective(self.model)
        if self.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.objective = nn.parallel.DistributedDataParallel(self.objective, device_ids=ids)
        if config.compile:
            self.objective = torch.compile(self.objective)  # type: ignore[assignment]
        opt_cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = opt_cls(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.total_steps = config.steps or config.epochs * max(1, len(self.loader))
        self.scheduler = _schedule(self.optimizer, config, self.total_steps)
        self.ema = (AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(config.ema), use_buffers=False)
                    if config.ema else None)
        self.use_amp = config.amp and self.device.type == "cuda"
        self.writer = self.rank == 0
        self.out = Path(config.out)
        self.state: dict[str, Any] = {"epoch": 0, "step": 0, "best_validation_nats": None, "history": []}
        if config.resume:
            self._resume()
        if self.writer:
            self.out.mkdir(parents=True, exist_ok=True)

    def _loader(self) -> tuple[DataLoader, Any, list[str]]:
        config, data = self.config, self.data
        x = data.train[: config.limit] if config.limit else data.train
        context = {k: (v[: config.limit] if config.limit else v) for k, v in data.context(self.spec, "train").items()}
        dataset = TensorDataset(x, *context.values())
        if self.distributed:
            sampler: Any = DistributedSampler(dataset, num_replicas=self.world, rank=self.rank, shuffle=config.shuffle, seed=config.seed)
        elif config.shuffle:
            sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(config.seed))
        else:
            sampler = SequentialSampler(dataset)
        loader = DataLoader(dataset, batch_size=config.batch_size, sampler=sampler,
                            drop_last=len(dataset) > config.batch_size * self.world)
        return loader, sampler, list(context)

    def _resume(self) -> None:
        last = self.out / "last.safetensors"
        tensors, metadata = read_checkpoint(last)
        self.model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
        if self.ema is not None and any(k.startswith("ema.") for k in tensors):
            self.ema.module.load_state_dict({k[len("ema."):]: v for k, v in tensors.items() if k.startswith("ema.")})
        load_optimizer_state(last, self.optimizer)
        load_scheduler_state(last, self.scheduler)
        self.state.update(json.loads(metadata["meta"]).get("state", {}))

    def checkpoint(self, name: str, extra: dict[str, Any] | None = None) -> None:
        if not self.writer:
            return
        meta = {"state": self.state, "data": self.data.name, "elements": self.elements, **(extra or {})}
        ema = {f"ema.{k}": v for k, v in self.ema.module.state_dict().items()} if self.ema is not None else None
        save_checkpoint(self.out / name, self.model, self.spec.ir.source, meta, self.optimizer, self.scheduler, ema,
                        backend=self.config.backend)

    def validate(self) -> float:
        model = self.ema.module if self.ema is not None else self.model
        if model.num_masks > 1:
            model.select_mask(0)
        return evaluate_nll(model, self.data.validation, self.data.context(self.spec, "validation"))

    def step(self, batch: list[torch.Tensor]) -> float:
        """One optimisation step on a batch; returns its loss in nats per item."""
        config, model = self.config, self.model
        if model.num_masks > 1:
            model.select_mask(self.state["step"] // config.resample_every)
        xb = batch[0].to(self.device)
        cb = {n: t.to(self.device) for n, t in zip(self.context_names, batch[1:])}
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_amp):
            loss = self.objective(xb, cb)
        if not torch.isfinite(loss):
            self.checkpoint("last.safetensors", {"stopped": "non-finite loss"})
            raise TrainingError(f"the loss became {float(loss.detach())} at step {self.state['step']}; the last good weights "
                                f"are in {self.out / 'last.safetensors'} (try a lower lr or grad_clip)")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(model)
        self.state["step"] += 1
        return float(loss.detach())

    def epoch(self) -> None:
        """One pass over the loader (or what is left of the step budget), then validation and checkpoints."""
        state, config = self.state, self.config
        if self.distributed:
            self.sampler.set_epoch(state["epoch"])
        bar = tqdm(self.loader, desc=f"epoch {state['epoch'] + 1}", disable=config.quiet or not self.writer, leave=True, dynamic_ncols=True)
        total, count = 0.0, 0
        self.model.train()
        for batch in bar:
            if state["step"] >= self.total_steps:
                break
            total += self.step(batch)
            count += 1
            running = total / count
            bar.set_postfix(nats=f"{running:.2f}", bpd=f"{bits_per_dim(running, self.elements):.4f}",
                            lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
        state["epoch"] += 1
        record: dict[str, Any] = {"epoch": state["epoch"], "step": state["step"], "train_nats": total / max(1, count)}
        if state["epoch"] % config.validate_every == 0 or state["step"] >= self.total_steps:
            record["validation_nats"] = val = self.validate()
            if self.writer and not config.quiet:
                tqdm.write(f"epoch {state['epoch']}: train {record['train_nats']:.3f} nats, validation {val:.3f} nats "
                           f"({bits_per_dim(val, self.elements):.4f} bits/dim)")
            state["history"].append(record)
            if state["best_validation_nats"] is None or val < state["best_validation_nats"]:
                state["best_validation_nats"] = val
                self.checkpoint("best.safetensors")
        else:
            state["history"].append(record)
        self.checkpoint("last.safetensors")


def train(spec: Any, data: Splits, config: TrainConfig) -> dict[str, Any]:
    """Train `spec` on `data`; returns the final figures. Ctrl-C saves the last state."""
    run = _Run(spec, data, config)
    start_time = time.time()
    try:
        while run.state["step"] < run.total_steps:
            run.epoch()
    except KeyboardInterrupt:
        run.checkpoint("last.safetensors", {"stopped": "interrupted"})
        if run.writer:
            print(f"\ninterrupted: saved {run.out / 'last.safetensors'} (continue with --resume)")
        raise
    finally:
        if run.writer and run.state["history"]:
            write_loss_curve(run.out, run.state["history"])
    if run.distributed:
        dist.barrier()
        dist.destroy_process_group()
    return {"steps": run.state["step"], "epochs": run.state["epoch"], "seconds": round(time.time() - start_time, 1),
            "best_validation_nats": run.state["best_validation_nats"], "out": str(run.out), "world_size": run.world}


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
