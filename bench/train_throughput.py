"""Training steps per second: the compiled Gated PixelCNN against a hand-written one of the same
size (bench/reference), measured side by side (interleaved rounds) in one run.

    python bench/train_throughput.py [--steps 20] [--batch 32]
Target: compiled / hand-written >= 0.95."""
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
    compiled = arspec.compile(spec, device=args.device, seed=0)
    reference = GatedPixelCNN().to(args.device)
    n_c = sum(p.numel() for p in compiled.parameters())
    n_r = sum(p.numel() for p in reference.parameters())
    x = torch.randint(0, 2, (args.batch, 1, 28, 28), device=args.device)
    print(f"parameters: compiled {n_c:,}, hand-written {n_r:,}; batch {args.batch}, 1x28x28, {args.device}")
    ratios = []
    for r in range(args.rounds):
        a = steps_per_second(lambda b: -compiled.log_prob(b), compiled.parameters(), x, args.steps)
        b = steps_per_second(reference.nll, reference.parameters(), x, args.steps)
        ratios.append(a / b)
        print(f"round {r + 1}: compiled {a:6.2f} steps/s, hand-written {b:6.2f} steps/s, ratio {a / b:.3f}")
    ratios.sort()
    print(f"median ratio compiled / hand-written: {ratios[len(ratios) // 2]:.3f} (target >= 0.95)")


if __name__ == "__main__":
    main()
