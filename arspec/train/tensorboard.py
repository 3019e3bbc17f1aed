"""The optional TensorBoard log of a run (`--log tensorboard`, the `tensorboard` extra): the training
loss and learning rate per step, the validation NLL (and bits/dim) per validation, and a grid of
samples from the validated weights for image models. It lives in OUT/tensorboard; a resumed run
purges what the interrupted one logged past its checkpoint, so curves never double back."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from arspec.errors import UsageError

LOG_FOLDER = "tensorboard"
INSTALL_HINT = "pip install 'arspec[tensorboard]' (or pip install tensorboard)"


def require_tensorboard() -> None:
    """Fail before training starts when `--log tensorboard` cannot write its log."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise UsageError(f"--log tensorboard: the tensorboard package is not installed: {INSTALL_HINT}") from None


def image_event(shape: tuple[int, ...]) -> bool:
    """Whether items are pictures a grid can show: (C, H, W) with one or three channels."""
    return len(shape) == 3 and shape[0] in (1, 3)


def forget_log(out: Path) -> None:
    """Remove a previous run's TensorBoard events from OUT (a fresh run must not draw on them)."""
    for events in (Path(out) / LOG_FOLDER).glob("events.out.tfevents.*"):
        events.unlink()


class TensorBoardLog:
    """Writes one run's scalars and sample grids; only the process that writes files makes one."""

    def __init__(self, out: Path, start_step: int, samples: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        require_tensorboard()
        self.folder = Path(out) / LOG_FOLDER
        # a resumed run logs from step start_step + 1 on: whatever an earlier run logged from there is stale
        self.writer = SummaryWriter(str(self.folder), purge_step=start_step + 1 if start_step else None)
        self.samples = samples

    def step(self, step: int, train_nats: float, lr: float, elements: int, discrete: bool) -> None:
        self.writer.add_scalar("train/nats", train_nats, step)
        if discrete:
            self.writer.add_scalar("train/bits_per_dim", train_nats / (elements * math.log(2)), step)
        self.writer.add_scalar("train/lr", lr, step)

    def validation(self, step: int, nats: float, elements: int, discrete: bool) -> None:
        self.writer.add_scalar("validation/nats", nats, step)
        if discrete:
            self.writer.add_scalar("validation/bits_per_dim", nats / (elements * math.log(2)), step)
        self.writer.flush()

    def sample_grid(self, step: int, model: Any, shape: tuple[int, ...], context: dict[str, torch.Tensor], seed: int) -> None:
        """`samples` items from `model` as one image, the same noise every time (so a grid changes
        only as the weights do); conditional models take the first validation items' context."""
        if not self.samples or not image_event(shape) or not hasattr(model, "sample"):
            return
        from arspec.pictures import grid, to_uint8_images

        n = self.samples
        given = {name: value[:n] for name, value in context.items()}
        if given:
            n = min(n, min(len(v) for v in given.values()))
        device = next(iter(model.parameters())).device
        generator = torch.Generator(device=device).manual_seed(seed)
        with torch.no_grad():
            x = model.sample(n, generator=generator, **{k: v.to(device) for k, v in given.items()})
        classes = getattr(getattr(model, "distribution", None), "classes", None)
        picture = np.asarray(grid(to_uint8_images(x.float().cpu().numpy(), classes), scale=2))
        self.writer.add_image("samples", picture, step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
