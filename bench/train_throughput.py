"""Training steps per second of the Gated PixelCNN from both torch backends — the interpreter
(`torch`) and the generated code (`torch-codegen`), eager and under torch.compile — against a
hand-written module of the same size (bench/reference), measured side by side (interleaved rounds)
in one run; then the peak resident memory of one training step at batch 64, each in a fresh process.

    python bench/train_throughput.py [--steps 10] [--batch 32] [--rounds 3] [--no-compile]
Targets: interpreter / hand-written >= 1.0 eager, >= 1.3 compiled."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import arspec  # noqa: E402

arspec.tune_allocator()        # freed memory kept for reuse; every side of a comparison runs in such a process
from bench.reference.gated_pixelcnn import GatedPixelCNN  # noqa: E402

AMP = {"enabled": False}


def steps_per_second(loss_fn, params, x: torch.Tensor, steps: int) -> float:
    opt = torch.optim.Adam(params, lr=1e-3)

    def step() -> None:
        opt.zero_grad()
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=AMP["enabled"]):
            loss = loss_fn(x).mean()
        loss.backward()
        opt.step()
    for _ in range(2):                       # warm-up
        step()
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - start)


def candidates(device: str, compile_too: bool) -> dict:
    spec = arspec.load_spec(ROOT / "specs" / "gated_pixelcnn.yaml")
    interpreter = arspec.compile(spec, device=device, seed=0)
    generated = arspec.compile(spec, backend="torch-codegen", device=device, seed=0)
    reference = GatedPixelCNN().to(device)
    out = {"hand-written": (reference.nll, reference),
           "torch": (lambda b: -interpreter.log_prob(b), interpreter),
           "torch-codegen": (lambda b: -generated.log_prob(b), generated)}
    if compile_too:
        compiled = arspec.compile(spec, device=device, seed=0)
        out["torch, compiled"] = (torch.compile(lambda b: -compiled.log_prob(b)), compiled)
    return out


def peak_memory(name: str, batch: int) -> float:
    """Peak RSS in MiB of a fresh process that builds the model and runs one training step."""
    code = f"""
import resource, sys, torch
sys.path.insert(0, {str(ROOT)!r})
import arspec
arspec.tune_allocator()
from bench.reference.gated_pixelcnn import GatedPixelCNN
x = torch.randint(0, 2, ({batch}, 1, 28, 28))
if {name!r} == "hand-written":
    model = GatedPixelCNN(); loss = model.nll(x).mean()
else:
    model = arspec.compile(arspec.load_spec({str(ROOT / "specs" / "gated_pixelcnn.yaml")!r}), backend={name!r}, seed=0)
    loss = -model.log_prob(x).mean()
loss.backward()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (about a minute of compilation)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (on CUDA)")
    args = parser.parse_args()
    AMP["enabled"] = args.amp
    torch.manual_seed(0)
    models = candidates(args.device, not args.no_compile)
    x = torch.randint(0, 2, (args.batch, 1, 28, 28), device=args.device)
    sizes = ", ".join(f"{name} {sum(p.numel() for p in m.parameters()):,}" for name, (_, m) in models.items())
    print(f"parameters: {sizes}; batch {args.batch}, 1x28x28, {args.device}")
    if "torch, compiled" in models:
        fn, model = models["torch, compiled"]
        start = time.perf_counter()
        fn(x).mean().backward()
        print(f"torch.compile of the training step: {time.perf_counter() - start:.0f} s (once)")
    ratios: dict[str, list[float]] = {name: [] for name in models if name != "hand-written"}
    for r in range(args.rounds):
        rates = {name: steps_per_second(fn, m.parameters(), x, args.steps) for name, (fn, m) in models.items()}
        for name in ratios:
            ratios[name].append(rates[name] / rates["hand-written"])
        print(f"round {r + 1}: steps/s " + ", ".join(f"{name} {rate:.2f}" for name, rate in rates.items())
              + f"; torch: {rates['torch'] * args.batch * 784:,.0f} elements/s")
    for name, values in ratios.items():
        values.sort()
        print(f"median ratio {name} / hand-written: {values[len(values) // 2]:.2f}")
    if args.device == "cpu":
        memory = {name: peak_memory(name, 64) for name in ("hand-written", "torch", "torch-codegen")}
        print("peak RSS of one training step at batch 64 (MiB): " + json.dumps({k: round(v) for k, v in memory.items()}))


if __name__ == "__main__":
    main()
