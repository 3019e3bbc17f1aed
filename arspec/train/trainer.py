"""The training loop: Adam/AdamW, learning-rate warm-up and schedule, gradient clipping, optional
EMA, bf16 autocast on CUDA, torch.compile, periodic validation with early stopping, best/last
checkpoints, exact resume (mid-epoch, bit for bit on CPU), Ctrl-C and NaN safety, and
DistributedDataParallel under torchrun (only rank 0 writes files)."""
from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from pydantic import ConfigDict, ValidationError
from torch import nn
from tqdm import tqdm

from arspec.checkpoint import load_optimizer_state, load_scheduler_state, load_weights, metadata_json, read_checkpoint, save_checkpoint
from arspec.data.splits import Splits
from arspec.errors import UsageError
from arspec.spec.models import TrainingSpec
from arspec.train.averaging import WeightAverage
from arspec.train.batches import epoch_batches
from arspec.train.curves import append_steps, keep_steps_through, write_epochs, write_loss_curve
from arspec.train.lock import RunLock
from arspec.train.tensorboard import TensorBoardLog, forget_log
from arspec.train.termination import Terminated, sigterm_interrupts

LAST, BEST, DIVERGED = "last.safetensors", "best.safetensors", "diverged.safetensors"


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss, gradient or weight); the message says where the
    last good state is, and where the diverged one was put."""


class OutputInUse(UsageError):
    """The output folder holds another run (a previous one, without --resume or --overwrite)."""


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
    overwrite: bool = False

    @classmethod
    def from_spec(cls, spec: Any, out: Path | str, **flags: Any) -> TrainConfig:
        values = spec.training.model_dump()
        values["resample_every"] = spec.connectivity.resample_every
        given = {k: v for k, v in flags.items() if v is not None}
        values.update(given)
        try:
            return cls(out=Path(out), **values)
        except ValidationError as err:
            raise UsageError(_flag_problems(err, given)) from None


def _flag_problems(err: ValidationError, flags: dict[str, Any]) -> str:
    """The first invalid training value, named as the flag that gave it (or the spec's field)."""
    from arspec.spec.pydantic_errors import describe
    first = err.errors(include_url=False)[0]
    name = str(first["loc"][0]) if first["loc"] else ""
    where = f"--{name.replace('_', '-')}" if name in flags else f"training.{name}"
    return f"{where}: {describe(first)}"


class _Objective(nn.Module):
    """Mean negative log-likelihood in nats per item (what DDP wraps)."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, context: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.training_loss(x, **context).mean()


def _networks(model: Any) -> list[Any]:
    """The interpreter networks of a model (a model of parts has several)."""
    return [m for m in model.modules() if hasattr(m, "checkpointing")]


def check_output(config: TrainConfig) -> None:
    """OutputInUse where the run cannot start: --resume without a last checkpoint, or a new run
    where a previous run's checkpoints are (unless --overwrite: nothing is replaced unasked)."""
    out = Path(config.out)
    if config.resume:
        if not (out / LAST).exists():
            raise OutputInUse(f"{out}: nothing to resume (no {LAST}); start without --resume")
        return
    previous = [name for name in (LAST, BEST) if (out / name).exists()]
    if previous and not config.overwrite:
        raise OutputInUse(f"{out} holds a previous run ({', '.join(previous)}); continue it with --resume, "
                          "start again there with --overwrite, or choose another --out")


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


def _schedule(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning-rate factor per step: a linear warm-up over `warmup_steps`, times the schedule."""
    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
        if config.schedule == "cosine":
            return warm * 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, total_steps))))
        if config.schedule == "exponential":
            return warm * config.lr_decay ** step
        return warm
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


ESTIMATE_DRAWS = 4096   # order-agnostic validation: at least this many (item, ordering) draws, up to 32 per item


@torch.no_grad()
def evaluate_nll(model, x: torch.Tensor, context: dict[str, torch.Tensor], batch_size: int = 256, ensemble: bool = False,
                 orderings: int | None = None, estimate: bool = False, iw: int | None = None) -> float:
    """Mean negative log-likelihood in nats per item over `x`. Order-agnostic models: exact in the
    model's ordering, averaged over `orderings` random ones, or (`estimate`) the order-agnostic
    loss with a fixed draw of orderings (an unbiased estimate of the NLL averaged over orderings,
    one pass instead of one per element: what training validates on; sets smaller than
    ESTIMATE_DRAWS items are drawn several times). Latent-variable models: the negative ELBO, or
    the importance-weighted estimate with `iw` samples, with a fixed draw of z."""
    was = model.training
    model.eval()
    total, count = 0.0, 0
    draw = torch.Generator().manual_seed(0)
    estimating = estimate and getattr(model, "agnostic", False)
    # a small set gets several draws per item, so early stopping does not chase the noise
    draws = max(1, min(32, -(-ESTIMATE_DRAWS // max(1, len(x))))) if estimating else 1
    rows = getattr(model, "rows_within", None)
    batch_size = max(1, min(batch_size, rows() if rows is not None else batch_size))
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size].to(model.device)
        cb = {k: v[start:start + batch_size].to(model.device) for k, v in context.items()}
        if hasattr(model, "elbo"):
            total += float(-model.log_prob(xb, iw=iw, generator=draw, **cb).sum())
        elif estimating:
            total += sum(float(model.agnostic_loss(xb, generator=draw, **cb).sum()) for _ in range(draws)) / draws
        else:
            total += float(-model.log_prob(xb, ensemble=ensemble, orderings=orderings, **cb).sum())
        count += len(xb)
    model.train(was)
    return total / max(1, count)


def per_dim_text(nats: float, elements: int, discrete: bool) -> str:
    """bits/dim for discrete data; for real values a density's bits/dim depends on the units, so
    the NLL per dimension is given in nats instead."""
    if discrete:
        return f"{bits_per_dim(nats, elements):.4f} bits/dim"
    return f"{nats / elements:.4f} nats/dim"


def bits_per_dim(nats: float, elements: int) -> float:
    return nats / (elements * math.log(2))


class _Run:
    """One training run: the model, its optimizer, schedule and EMA, the batches of every epoch, and
    the bookkeeping that checkpoints it and resumes it exactly (mid-epoch included)."""

    def __init__(self, spec: Any, data: Splits, config: TrainConfig) -> None:
        import arspec

        self.spec, self.data, self.config = spec, data, config
        self.distributed, self.rank, self.world = _distributed()
        self.device = _device(config.device, self.rank)
        torch.manual_seed(config.seed)
        self.model = arspec.compile(spec, backend=config.backend, device=self.device, seed=config.seed)
        self.elements = int(torch.tensor(spec.event.shape).prod())
        self.x = data.train[: config.limit] if config.limit else data.train
        self.context = {k: (v[: config.limit] if config.limit else v) for k, v in data.context(spec, "train").items()}
        if config.checkpoint:
            for net in _networks(self.model):
                net.checkpointing = True
        self.objective: nn.Module = _Objective(self.model)
        if self.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.objective = nn.parallel.DistributedDataParallel(self.objective, device_ids=ids)
        if config.compile:
            self.objective = torch.compile(self.objective)  # type: ignore[assignment]
        opt_cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = opt_cls(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.total_steps = config.steps or config.epochs * len(self.batches(0))
        self.scheduler = _schedule(self.optimizer, config, self.total_steps)
        self.ema = WeightAverage(self.model, config.ema) if config.ema else None
        self.use_amp = config.amp and self.device.type == "cuda"
        self.writer = self.rank == 0
        self.out = Path(config.out)
        self.state: dict[str, Any] = {"epoch": 0, "batch": 0, "step": 0, "best_validation_nats": None, "best_step": None,
                                      "stale": 0, "stopped": None, "history": [], "since": [0.0, 0]}
        self.step_rows: list[dict[str, Any]] = []
        if config.resume:
            self._resume()
        elif self.writer:
            self._start_afresh()
        self.log = TensorBoardLog(self.out, self.state["step"], config.log_samples) if config.log == "tensorboard" and self.writer else None

    def _start_afresh(self) -> None:
        """A new run in `out` (see check_output): the previous run's curves removed."""
        check_output(self.config)
        self.out.mkdir(parents=True, exist_ok=True)
        for name in ("loss.csv", "epochs.csv", DIVERGED):
            (self.out / name).unlink(missing_ok=True)
        forget_log(self.out)

    def batches(self, epoch: int) -> list[torch.Tensor]:
        return epoch_batches(len(self.x), self.config.batch_size, epoch, self.config.seed, self.config.shuffle, self.rank, self.world)

    def _resume(self) -> None:
        last = self.out / LAST
        check_output(self.config)
        tensors, metadata = read_checkpoint(last)
        load_weights(self.model, {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}, last)
        if self.ema is not None and any(k.startswith("ema.") for k in tensors):
            load_weights(self.ema.module, {k[len("ema."):]: v for k, v in tensors.items() if k.startswith("ema.")}, last)
        load_optimizer_state(last, self.optimizer)
        load_scheduler_state(last, self.scheduler)
        if "rng.cpu" in tensors:
            torch.set_rng_state(tensors["rng.cpu"])
        self.state.update(metadata_json(last, metadata, "meta", {}).get("state", {}))
        self.state["stopped"] = None
        self.state["resumed_at"] = [*self.state.get("resumed_at", []), int(self.state["step"])]
        if self.writer:
            keep_steps_through(self.out, int(self.state["step"]))
            print(f"resuming from step {self.state['step']} (epoch {self.state['epoch'] + 1}, batch {self.state['batch'] + 1}) of {last}")

    def checkpoint(self, name: str, extra: dict[str, Any] | None = None) -> None:
        """Write `name` (best or last) from the current state: never with weights that are not
        finite (the previous file is kept, the state goes to diverged.safetensors, and training
        stops). Then the per-step rows it covers go to loss.csv (after the file: a resume never
        finds rows twice)."""
        if not self.finite():
            self.diverged(f"the weights became non-finite by step {self.state['step']}")
        self._save(name, extra)
        if self.writer and self.step_rows:
            append_steps(self.out, self.step_rows)
            self.step_rows = []

    def _save(self, name: str, extra: dict[str, Any] | None = None) -> None:
        if not self.writer:
            return
        meta = {"state": self.state, "data": self.data.name, "elements": self.elements, **(extra or {})}
        if self.data.vocab is not None:
            meta["vocab"] = self.data.vocab
        tensors = {"rng.cpu": torch.get_rng_state()}
        if self.ema is not None:
            tensors.update({f"ema.{k}": v for k, v in self.ema.module.state_dict().items()})
        exact = name != BEST                  # the best weights are for evaluation: no optimizer state
        save_checkpoint(self.out / name, self.model, self.spec.ir.source, meta, self.optimizer if exact else None,
                        self.scheduler if exact else None, tensors, backend=self.config.backend)

    def finite(self) -> bool:
        """Whether every weight (and the average of them, with EMA) is finite."""
        modules = [self.model] + ([self.ema.module] if self.ema is not None else [])
        return all(bool(torch.isfinite(p).all()) for m in modules for p in m.parameters())

    def diverged(self, reason: str) -> None:
        """Stop training on a non-finite loss, gradient or weight. The weights as they are before
        this step's update are saved as the last state when they are finite (resume from there with
        a lower --lr); otherwise the last state written stays, and these go to diverged.safetensors."""
        last = self.out / LAST
        if self.finite():
            self._save(LAST, {"stopped": reason})
            if self.writer and self.step_rows:
                append_steps(self.out, self.step_rows)
                self.step_rows = []
            where = (f"the weights before that update are saved as the last state, {last} (resume it with --resume and a lower "
                     "--lr or --grad-clip)")
        else:
            self._save(DIVERGED, {"stopped": reason})
            kept = f"the last good state is {last} (unchanged)" if last.exists() else f"no good state was saved before ({last} does not exist)"
            best = f", the best weights {self.out / BEST}" if (self.out / BEST).exists() else ""
            where = f"{kept}{best}; the diverged weights are in {self.out / DIVERGED}"
        raise TrainingError(f"{reason}; {where}")

    def step(self, items: torch.Tensor) -> float:
        """One optimisation step on a batch of item indices; returns its loss in nats per item."""
        config, model = self.config, self.model
        if model.num_masks > 1:
            model.select_mask(self.state["step"] // config.resample_every)
        if hasattr(model, "set_step"):               # a latent-variable model's KL warm-up
            model.set_step(self.state["step"])
        xb = self.x[items].to(self.device)
        cb = {n: t[items].to(self.device) for n, t in self.context.items()}
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_amp):
            loss = self.objective(xb, cb)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in model.parameters() if p.grad is not None]
        if config.grad_clip:
            norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        value, norm_value = torch.stack([loss.detach().float(), norm.float()]).tolist()    # one synchronisation
        if not math.isfinite(value):
            self.diverged(f"the loss became {value} at step {self.state['step'] + 1}")
        if not math.isfinite(norm_value):
            self.diverged(f"the gradient became {norm_value} at step {self.state['step'] + 1}")
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(model, self.state["step"])
        self.state["step"] += 1
        self.state["since"] = [self.state["since"][0] + value, self.state["since"][1] + 1]
        self.step_rows.append({"step": self.state["step"], "epoch": self.state["epoch"] + 1, "train_nats": value, "lr": lr})
        if self.log is not None:
            self.log.step(self.state["step"], value, lr, self.elements, self.model.distribution.discrete)
        return value

    def epoch(self) -> None:
        """The rest of the current epoch (or of the step budget); validation and checkpoints."""
        state, config = self.state, self.config
        batches = self.batches(state["epoch"])
        bar = tqdm(total=len(batches), initial=state["batch"], desc=f"epoch {state['epoch'] + 1}",
                   disable=config.quiet or not self.writer, leave=True, dynamic_ncols=True)
        while state["batch"] < len(batches) and state["step"] < self.total_steps:
            self.step(batches[state["batch"]])
            state["batch"] += 1
            bar.update(1)
            total, count = state["since"]
            per_dim = ({"bpd": f"{bits_per_dim(total / count, self.elements):.4f}"} if self.model.distribution.discrete else {})
            terms = {k: f"{v:.2f}" for k, v in getattr(self.model, "last_terms", {}).items()}   # a VAE's KL and reconstruction
            bar.set_postfix(nats=f"{total / count:.2f}", **per_dim, **terms, lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
        bar.close()
        if state["batch"] >= len(batches):
            state["epoch"] += 1
            state["batch"] = 0
            if state["epoch"] % config.validate_every == 0:
                self.validate_and_save()
        self.checkpoint(LAST)

    def validate_and_save(self) -> None:
        """Validation NLL; the best checkpoint; early stopping after `patience` validations without improvement."""
        state, config = self.state, self.config
        model = self.ema.module if self.ema is not None else self.model
        if model.num_masks > 1:
            model.select_mask(0)
        val = evaluate_nll(model, self.data.validation, self.data.context(self.spec, "validation"), estimate=True)
        total, count = state["since"]
        record = {"epoch": state["epoch"] + (1 if state["batch"] else 0), "step": state["step"], "train_nats": total / max(1, count), "validation_nats": val}
        state["history"].append(record)
        state["since"] = [0.0, 0]
        if self.writer and not config.quiet:
            tqdm.write(f"step {state['step']}: train {record['train_nats']:.3f} nats, validation {val:.3f} nats "
                       f"({per_dim_text(val, self.elements, self.model.distribution.discrete)})")
        if state["best_validation_nats"] is None or val < state["best_validation_nats"]:
            state.update(best_validation_nats=val, best_step=state["step"], stale=0)
            self.checkpoint(BEST)
        else:
            state["stale"] += 1
            if config.patience is not None and state["stale"] >= config.patience:
                state["stopped"] = f"no improvement in {state['stale']} validations"
        if self.writer:
            write_epochs(self.out, state["history"], state["best_step"])
        if self.log is not None:
            self.log.validation(state["step"], val, self.elements, self.model.distribution.discrete)
            self.log.sample_grid(state["step"], model, tuple(self.spec.event.shape), self.data.context(self.spec, "validation"), config.seed)

    def finish(self) -> None:
        """Validate the final state if the last validation was earlier; write the curves."""
        history = self.state["history"]
        if not history or history[-1]["step"] != self.state["step"]:
            self.validate_and_save()
        self.checkpoint(LAST, {"stopped": self.state["stopped"]} if self.state["stopped"] else None)
        if self.writer:
            write_loss_curve(self.out, self.state["history"], self.state["best_step"], self.state.get("resumed_at", []))


def train(spec: Any, data: Splits, config: TrainConfig) -> dict[str, Any]:
    """Train `spec` on `data`; returns the final figures. Ctrl-C or SIGTERM saves the exact state to resume from."""
    writer = int(os.environ.get("RANK", "0")) == 0
    with RunLock(config.out) if writer else contextlib.nullcontext():
        run = _Run(spec, data, config)
        start_time = time.time()
        try:
            with sigterm_interrupts():
                while run.state["step"] < run.total_steps and not run.state["stopped"]:
                    run.epoch()
                run.finish()
        except KeyboardInterrupt as stop:
            how = "terminated (SIGTERM)" if isinstance(stop, Terminated) else "interrupted"
            run.checkpoint(LAST, {"stopped": how})
            if run.writer:
                print(f"\n{how} at step {run.state['step']}: saved {run.out / LAST} (continue with --resume)")
            raise
        finally:
            if run.log is not None:
                run.log.close()
    if run.distributed:
        dist.barrier()
        dist.destroy_process_group()
    if run.state["stopped"] and run.writer and not config.quiet:
        print(f"stopped early at step {run.state['step']}: {run.state['stopped']} (patience {config.patience})")
    return {"steps": run.state["step"], "epochs": run.state["epoch"], "seconds": round(time.time() - start_time, 1),
            "best_validation_nats": run.state["best_validation_nats"], "best_step": run.state["best_step"],
            "stopped": run.state["stopped"], "out": str(run.out), "world_size": run.world}
