"""`arspec distill TEACHER STUDENT_SPEC`: probability density distillation of a student of inverse
autoregressive flows from a trained teacher; writes the student's checkpoint, WAVs and spectrograms
of real, teacher and student audio, and prints the teacher's NLL of each."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def run(args: Any) -> int:
    import torch

    from arspec import load_spec
    from arspec.composite.models import CompositeSpec
    from arspec.data import load_data
    from arspec.errors import UsageError
    from arspec.train.distill import DistillConfig, distill
    spec = load_spec(args.spec, overrides=args.overrides)
    if not isinstance(spec, CompositeSpec) or spec.objective.type != "distillation":
        raise UsageError(f"{args.spec}: a student spec has parts with role: flow and objective: {{type: distillation}}")
    data = load_data(spec, args.data)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    config = DistillConfig(Path(args.out), steps=args.steps or spec.training.steps or 1000,
                           batch_size=args.batch_size or spec.training.batch_size, lr=args.lr or spec.training.lr,
                           seed=args.seed, device=device, quiet=args.quiet, grad_clip=spec.training.grad_clip)
    print(f"distilling {spec.name} from {args.teacher} on {data.name} ({len(data.train):,} training items), "
          f"{config.steps} steps of {config.batch_size} -> {config.out}")
    result = distill(args.teacher, spec, data, config)
    final, nll = result["final"], result["teacher_nll_per_sample"]
    power = f", power loss {final['power']:.4g}" if "power" in final else ""
    print(f"final KL(student || teacher) {final['kl_per_sample']:.4f} nats per sample{power} after {config.steps} steps in {result['seconds']} s")
    print(f"teacher NLL per sample, given the loudest test item's conditioning: real audio {nll['real']:.3f}, teacher samples "
          f"{nll['teacher']:.3f}, student samples {nll['student']:.3f} nats")
    ratio = result["teacher_generation_s"] / max(result["student_generation_s"], 1e-9)
    print(f"generation: teacher (cached) {result['teacher_generation_s']:.2f} s, student (parallel) {result['student_generation_s']:.3f} s "
          f"({ratio:.0f}x faster)")
    print("wrote " + ", ".join(result["files"]) + f" and {config.out / 'last.safetensors'}")
    return 0
