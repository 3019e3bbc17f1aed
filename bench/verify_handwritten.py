"""`arspec verify` on hand-written PyTorch models at full size: wall time of the whole check (every
element, eval and train mode, batch coupling, blind spots where the default looks for them),
beside what measuring the same dependencies by perturbation would cost (one forward item per
element, timed on a few).

    python bench/verify_handwritten.py [--quick]
Targets (issue #33): a 3x32x32 PixelCNN with 256-class logits and a 16,000-sample WaveNet, each
under 60 s on these 2-core machines."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from arspec.verification import verify
from arspec.verification.api import make_input

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "fixtures"))
import handwritten as hw  # noqa: E402


def perturbation_seconds(model: torch.nn.Module, shape: tuple[int, ...], kind: str, elements: int, items: int = 8) -> float:
    """Seconds per element of the perturbation method (float64, batches of `items`), times the elements."""
    double = model.double().eval()
    x = make_input(kind, shape, items, torch.float64, 0)
    with torch.no_grad():
        double(x)
        start = time.perf_counter()
        double(x)
        per_item = (time.perf_counter() - start) / items
    model.float()
    return per_item * elements * 2          # each element: its perturbed item and the reference item


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller models (a smoke run)")
    args = parser.parse_args()
    torch.manual_seed(0)
    scale = 4 if args.quick else 1
    cases = [
        ("R->G->B PixelCNN, 256-class logits, 3x32x32", hw.RGBPixelCNN(levels=256, channels=96 // scale, layers=6 // scale),
         (3, 32 // scale, 32 // scale), "categorical:256", "b (k c) h w", "rgb"),
        ("WaveNet, 30 layers of 64 channels, 16,000 samples", hw.WaveNet(classes=256, channels=64 // scale,
                                                                        dilations=tuple([1, 2, 4, 8, 16, 32, 64, 128, 256, 512] * (3 // scale or 1))),
         (16000 // scale,), "categorical:256", "b k t", "raster"),
        ("decoder-only transformer, 1,024 tokens", hw.Decoder(classes=256, width=128, heads=4, length=1024 // scale),
         (1024 // scale,), "categorical:256", "b t k", "raster"),
    ]
    print(f"{'model':52} {'verdict':>16} {'verify s':>9} {'perturbation s (est.)':>22}")
    for name, model, shape, kind, output, order in cases:
        start = time.perf_counter()
        report = verify(model, shape, input=kind, output=output, order=order)
        seconds = time.perf_counter() - start
        elements = 1
        for s in shape:
            elements *= s
        estimate = perturbation_seconds(model, shape, kind, elements)
        verdict = "autoregressive" if report.autoregressive else "NOT"
        print(f"{name:52} {verdict:>16} {seconds:9.1f} {estimate:22.0f}", flush=True)


if __name__ == "__main__":
    main()
