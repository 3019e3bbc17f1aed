"""Probability density distillation (Parallel WaveNet, van den Oord et al. 2017): a student of
inverse autoregressive flows learns from a trained, frozen autoregressive teacher. Each step draws
one student sample per item given the item's conditioning, estimates KL(student || teacher) on it
(the student's closed-form entropy, the cross-entropy under the teacher's per-step distribution
given the student's own past), adds the power loss against the item's real audio, and optionally
the contrastive term (the KL under another item's conditioning, subtracted).

The student is checkpointed like any model (safetensors + spec, no pickle); the report compares
the teacher's NLL of student samples, of its own samples and of the real audio, and the WAVs and
spectrograms of all three are written next to it."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from arspec.checkpoint import load_model, save_checkpoint
from arspec.data.splits import Splits


class DistillError(ValueError):
    """A teacher and a student that cannot be distilled together (reported as one line, exit 2)."""


@dataclass
class DistillConfig:
    out: Path
    steps: int = 1000
    batch_size: int = 4
    lr: float = 1e-3
    seed: int = 0
    device: str = "cpu"
    quiet: bool = False
    grad_clip: float | None = 1.0


def check_compatible(teacher: Any, student: Any, student_spec: Any) -> None:
    """The teacher must model the student's event and read the same context; the student's backend
    checks the rest (a logistic mixture per element, and an input read as real values, so that
    gradients reach the student's samples)."""
    if tuple(teacher.event_shape) != tuple(student_spec.event.shape):
        raise DistillError(f"the teacher models events of shape {list(teacher.event_shape)}, the student {list(student_spec.event.shape)}")
    student_context = {k: {"type": c.type, "channels": c.channels, "upsample": c.upsample} if c.type == "local"
                       else {"type": c.type, "classes": c.classes} for k, c in student_spec.conditioning.items()}
    if teacher.conditioning != student_context:
        raise DistillError(f"the teacher reads the context {teacher.conditioning}, the student {student_context}: they must read the same")
    problem = student.teacher_problem(teacher)
    if problem:
        raise DistillError(problem)


def _audio(teacher: Any, classes_or_reals: torch.Tensor) -> torch.Tensor:
    """Data items as real audio in [-1, 1], as the teacher encodes them."""
    return teacher.distribution.encode(classes_or_reals, teacher.dtype)


def _quantized(teacher: Any, audio: torch.Tensor) -> torch.Tensor:
    """Real audio as the teacher's data (class indices of its levels)."""
    d = teacher.distribution
    if not d.discrete:
        return audio
    return torch.round((audio.clamp(-1, 1) + 1) * (d.classes - 1) / 2).long()


def distill(teacher_path: str | Path, spec: Any, data: Splits, config: DistillConfig) -> dict[str, Any]:
    """Train the student `spec` against the teacher checkpoint; returns the figures of the run."""
    import arspec
    teacher = load_model(teacher_path, device=config.device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    torch.manual_seed(config.seed)
    student = arspec.compile(spec, device=config.device, seed=config.seed)
    check_compatible(teacher, student, spec)
    optimizer = torch.optim.Adam(student.parameters(), lr=config.lr)
    x_train = data.train
    ctx_train = data.context(spec, "train")
    gen = torch.Generator().manual_seed(config.seed)
    draw = torch.Generator(device=config.device).manual_seed(config.seed + 1)
    steps_per_sample = int(np.prod(spec.event.shape))
    bar = tqdm(range(config.steps), desc="distilling", disable=config.quiet, dynamic_ncols=True)
    history: list[dict[str, float]] = []
    start = time.time()
    for step in bar:
        idx = torch.randint(0, len(x_train), (config.batch_size,), generator=gen)
        context = {k: v[idx].to(config.device) for k, v in ctx_train.items()}
        other = {k: torch.roll(v, 1, 0) for k, v in context.items()} if config.batch_size > 1 else None
        target = _audio(teacher, x_train[idx].to(config.device))
        terms = student.distillation_terms(teacher, context, target=target, generator=draw, other_context=other)
        loss = terms["loss"].mean()
        if not torch.isfinite(loss):
            raise DistillError(f"the distillation loss became {float(loss)} at step {step}; try a lower --lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(student.parameters(), config.grad_clip)
        optimizer.step()
        row = {"step": step + 1, "kl_per_sample": float(terms["kl"].detach().mean()) / steps_per_sample,
               "entropy_per_sample": float(terms["entropy"].detach().mean()) / steps_per_sample}
        if "power" in terms:
            row["power"] = float(terms["power"].detach().mean())
        history.append(row)
        bar.set_postfix(kl=f"{row['kl_per_sample']:.3f}", **({"power": f"{row['power']:.3g}"} if "power" in row else {}))
    seconds = time.time() - start
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"teacher": str(teacher_path), "data": data.name, "steps": config.steps, "seconds": round(seconds, 1),
            "history": history[-200:]}
    save_checkpoint(out / "last.safetensors", student, spec.ir.source, meta, optimizer)
    (out / "distill.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "history"} | {"final": history[-1]}, indent=2))
    report = compare_samples(teacher, student, data, spec, out, config.device)
    return {"out": str(out), "seconds": round(seconds, 1), "final": history[-1], **report}


@torch.no_grad()
def compare_samples(teacher: Any, student: Any, data: Splits, spec: Any, out: Path, device: str, items: int = 1) -> dict[str, Any]:
    """Teacher and student samples for the conditioning of the loudest test items (a crop of
    silence would say little), with the real audio: WAVs, spectrograms, the teacher's NLL (nats per
    sample) of each, and the generation times."""
    from arspec.data.audio import write_wav
    from arspec.pictures import save_spectrograms
    rate = spec.event.rate or 16000
    loudness = _audio(teacher, data.test).std(dim=1)
    pick = torch.argsort(loudness, descending=True)[:items]
    context = {k: v[pick].to(device) for k, v in data.context(spec, "test").items()}
    real = data.test[pick].to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    start = time.perf_counter()
    teacher_x = teacher.sample(items, generator=gen, **context)
    teacher_s = time.perf_counter() - start
    student.eval()
    start = time.perf_counter()
    student_audio = student.sample(items, generator=gen, **context).clamp(-1, 1)
    student_s = time.perf_counter() - start
    student_x = _quantized(teacher, student_audio)
    steps = int(np.prod(spec.event.shape))
    nll = {name: float(-teacher.log_prob(x, **context).mean()) / steps
           for name, x in (("real", real), ("teacher", teacher_x), ("student", student_x))}
    clips = {"real": _audio(teacher, real), "teacher": _audio(teacher, teacher_x), "student": student_audio}
    for name, audio in clips.items():
        write_wav(out / f"{name}.wav", audio[0].double().cpu().numpy(), rate)
    save_spectrograms(out / "spectrograms.png", [(f"{name} (teacher NLL {nll[name]:.3f} nats/sample)", clips[name][0].cpu().numpy())
                                                 for name in ("real", "teacher", "student")], rate)
    return {"teacher_nll_per_sample": nll, "teacher_generation_s": round(teacher_s, 3), "student_generation_s": round(student_s, 4),
            "files": [str(out / f"{n}.wav") for n in clips] + [str(out / "spectrograms.png")]}
