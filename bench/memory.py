"""Peak memory and step time of a training step (forward + backward), arspec against hand-written
PyTorch of the same size, each measurement in a fresh process (peak RSS is per process), at
growing lengths: how cost grows, not one size.

    python bench/memory.py [--quick] [--forward] [--models transformer,wavenet,made,pixelsnail]
Target (issue #36): training step >= 1.0x the hand-written model's speed and <= 1.1x its peak
memory; the transformer at 256, 1,024 and 4,096 tokens, WaveNet at 16,000 samples, MADE (against
zuko's MaskedMLP) at batch 100, 1,000 and 10,000. PixelSNAIL (no hand-written reference here) at
16x16, 32x32 and 64x64: its peak memory should grow linearly with the pixels (the attention fused,
no T x T mask), which the last column shows as MB per 1,000 pixels above the smallest size."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHILD = r"""
import json, resource, statistics, sys, time
import torch
sys.path.insert(0, {root!r})
torch.manual_seed(0)
family, side, length, batch, forward, checkpoint = {family!r}, {side!r}, {length}, {batch}, {forward}, {checkpoint}
import arspec
if family == "transformer":
    spec = arspec.load_spec({root!r} + "/specs/transformer_text.yaml", overrides=[f"event.shape=[{{length}}]"])
    if side == "reference":
        from bench.reference.decoder import Decoder
        model = Decoder(length)
elif family == "made":
    spec = arspec.load_spec({root!r} + "/specs/made.yaml", overrides=["graph.out.direct=false"])
    if side == "reference":
        import torch.nn.functional as F
        import zuko
        order = torch.arange(784)
        model = zuko.nn.MaskedMLP(order[:, None] > order[None, :], [500, 500])
        model.nll = lambda x: F.binary_cross_entropy_with_logits(model(x.flatten(1).float()), x.flatten(1).float(), reduction="none").sum(1).mean()
elif family == "pixelsnail":
    spec = arspec.load_spec({root!r} + "/specs/pixelsnail.yaml", overrides=[f"event.shape=[1,{{length}},{{length}}]"])
else:
    spec = arspec.load_spec({root!r} + "/specs/wavenet.yaml", overrides=[f"event.shape=[{{length}}]"])
    if side == "reference":
        from bench.reference.wavenet import WaveNet
        model = WaveNet()
if side == "arspec":
    model = arspec.compile(spec, seed=0)
    model.net.checkpointing = checkpoint
    loss_of = lambda x: model.training_loss(x).mean()
else:
    loss_of = lambda x: model.nll(x)
parameters = sum(p.numel() for p in model.parameters())
if family == "made":
    x = torch.randint(0, 2, (batch, 1, 28, 28))
elif family == "pixelsnail":
    x = torch.randint(0, 2, (batch, 1, length, length))
else:
    x = torch.randint(0, 256, (batch, length))
def step():
    if forward:
        with torch.no_grad():
            loss_of(x)
        return
    model.zero_grad(set_to_none=True)
    loss_of(x).backward()
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
times = []
for _ in range({rounds}):
    start = time.perf_counter(); step(); times.append(time.perf_counter() - start)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"seconds": statistics.median(times), "peak_mb": peak / 1024, "parameters": parameters}}))
"""


def measure(family: str, side: str, length: int, batch: int, forward: bool, rounds: int, checkpoint: bool = False) -> dict:
    code = CHILD.format(root=str(ROOT), family=family, side=side, length=length, batch=batch, forward=forward, rounds=rounds,
                        checkpoint=checkpoint)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=3600)
    if result.returncode:
        raise RuntimeError(result.stderr[-2000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the smaller sizes only")
    parser.add_argument("--forward", action="store_true", help="forward passes without gradients instead of training steps")
    parser.add_argument("--models", default="transformer,wavenet,made,pixelsnail",
                        help="which of transformer, wavenet, made, pixelsnail (comma-separated)")
    args = parser.parse_args()
    chosen = set(args.models.split(","))
    cases = [("transformer", n, 4) for n in ((256, 1024) if args.quick else (256, 1024, 4096))]
    cases += [("wavenet", 4000 if args.quick else 16000, 4)]
    try:
        import zuko  # noqa: F401
        cases += [("made", 784, b) for b in ((100, 1000) if args.quick else (100, 1000, 10000))]      # MADE grows with the batch
    except ImportError:
        print("MADE against zuko skipped (pip install -e \".[bench]\")")
    what = "forward without gradients" if args.forward else "training step"
    from machine import describe  # bench/, this script's folder (imports torch: not before the children are planned)
    print(describe())
    print(f"{what} (WaveNet at batch 16: with activation checkpointing on arspec's side): arspec against the hand-written model "
          "(MADE: zuko's MaskedMLP; fresh process each; speed = reference time / arspec time)")
    print(f"{'model':24} {'length':>7} {'batch':>6} {'params':>10} {'arspec s':>9} {'hand s':>8} {'speed':>6} {'arspec MB':>10} {'hand MB':>8} {'memory':>7}")
    if not args.forward:
        cases.append(("wavenet", 4000 if args.quick else 16000, 16))   # the issue's: batch 16 within 8 GB, with checkpointing
    for family, length, batch in [c for c in cases if c[0] in chosen and c[0] != "pixelsnail"]:
        checkpoint = family == "wavenet" and batch > 4
        rounds = 1 if checkpoint else 3
        ours = measure(family, "arspec", length, batch, args.forward, rounds, checkpoint)
        ref = measure(family, "reference", length, batch, args.forward, rounds)
        family = family + (" (checkpointed)" if checkpoint else "")
        same = "" if ours["parameters"] == ref["parameters"] else f"  (parameters differ: {ref['parameters']:,})"
        print(f"{family:24} {length:7,} {batch:6,} {ours['parameters']:10,} {ours['seconds']:9.3f} {ref['seconds']:8.3f} "
              f"{ref['seconds'] / ours['seconds']:5.2f}x {ours['peak_mb']:10.0f} {ref['peak_mb']:8.0f} "
              f"{ours['peak_mb'] / ref['peak_mb']:6.2f}x{same}", flush=True)
    if "pixelsnail" in chosen:
        pixelsnail_growth(args.forward, (16, 32) if args.quick else (16, 32, 64))


def pixelsnail_growth(forward: bool, sides: tuple[int, ...], batch: int = 4) -> None:
    """PixelSNAIL alone at growing image sides: peak memory and how it grows per pixel."""
    print(f"\n{'pixelsnail':24} {'side':>7} {'batch':>6} {'params':>10} {'arspec s':>9} {'arspec MB':>10} {'MB per 1k pixels above the first':>34}")
    first = None
    for side in sides:
        ours = measure("pixelsnail", "arspec", side, batch, forward, 3)
        first = first or (side, ours["peak_mb"])
        growth = f"{(ours['peak_mb'] - first[1]) / ((side * side - first[0] ** 2) / 1000):.1f}" if side != first[0] else "—"
        print(f"{'pixelsnail':24} {side:4}x{side:<3} {batch:6,} {ours['parameters']:10,} {ours['seconds']:9.3f} {ours['peak_mb']:10.0f} "
              f"{growth:>34}", flush=True)


if __name__ == "__main__":
    main()
