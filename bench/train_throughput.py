"""Training steps per second of the Gated PixelCNN from both torch backends — the interpreter
(`torch`) and the generated code (`torch-codegen`) — against a hand-written module of the same size
(bench/reference), measured side by side (interleaved rounds) in one run.

    python bench/train_throughput.py [--steps 20] [--batch 32]
Target: interpreter / hand-written >= 1.0."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import arspec  # noqa: E402
from bench.reference.gated_pixelcnn import GatedPixelCNN  # noqa: E402


def steps_per_second(loss_fn, params, x: torch.Tensor, steps: int) -> float:
    opt = torch.optim.Adam(params, lr=1e-3)
    for _ in range(2):                       # warm-up
        opt.zero_grad()
        loss_fn(x).mean().backward()
        opt.step()
    start = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(x).mean().backward()
        opt.step()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    spec = arspec.load_spec(ROOT / "specs" / "gated_pixelcnn.yaml")
    models = {"torch": arspec.compile(spec, device=args.device, seed=0),
              "torch-codegen": arspec.compile(spec, backend="torch-codegen", device=args.device, seed=0)}
    reference = GatedPixelCNN().to(args.device)
    x = torch.randint(0, 2, (args.batch, 1, 28, 28), device=args.device)
    sizes = ", ".join(f"{name} {sum(p.numel() for p in m.parameters()):,}" for name, m in models.items())
    print(f"parameters: {sizes}, hand-written {sum(p.numel() for p in reference.parameters()):,}; batch {args.batch}, 1x28x28, {args.device}")
    ratios: dict[str, list[float]] = {name: [] for name in models}
    for r in range(args.rounds):
        rates = {name: steps_per_second(lambda b, m=m: -m.log_prob(b), m.parameters(), x, args.steps) for name, m in models.items()}
        hand = steps_per_second(reference.nll, reference.parameters(), x, args.steps)
        for name, rate in rates.items():
            ratios[name].append(rate / hand)
        shown = ", ".join(f"{name} {rate:6.2f}" for name, rate in rates.items())
        print(f"round {r + 1}: steps/s {shown}, hand-written {hand:6.2f}")
    for name, values in ratios.items():
        values.sort()
        print(f"median ratio {name} / hand-written: {values[len(values) // 2]:.3f}")


if __name__ == "__main__":
    main()
