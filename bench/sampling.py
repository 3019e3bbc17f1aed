"""Naive against cached sampling, side by side in one run.

    python bench/sampling.py [--quick] [--batch N] [--device cuda]
Naive sampling recomputes the whole network at every step, so its cost per step is constant: it
is timed on its first steps and the total extrapolated (marked '~'). Cached sampling always runs to
the end: on the CPU through the compiled per-step plan (numpy, ring buffers), elsewhere through
the torch path. Memory is what the cache holds. Targets: WaveNet <= 1.2 ms per sample at batch 1,
flat in the length; Gated PixelCNN 1x28x28 >= 20x naive; R->G->B PixelCNN 3x32x32 >= 40x naive;
the transformer at 512 tokens >= 10x naive (its key-value cache: keys and values of each position
computed once, the queries of the new position only); the Video Pixel Network at 10 frames of 32x32
>= 20x naive (frame by frame: the encoder and the recurrence over frames once per frame, the decoder
per pixel); PixelSNAIL's ratio is reported beside them.
Last, multiscale PixelCNN's O(log N) parallel steps against raster sampling."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import arspec

SPECS = Path(__file__).resolve().parent.parent / "specs"


def _sync(model) -> None:
    if model.device.type == "cuda":
        torch.cuda.synchronize()


def naive_time(model, n: int, context, max_steps: int) -> tuple[float, bool]:
    """Seconds for naive sampling; extrapolated from `max_steps` steps when the event is longer."""
    steps = model.steps()
    x = model._blank(n)
    gen = torch.Generator().manual_seed(0)
    done = min(len(steps), max_steps)
    _sync(model)
    start = time.perf_counter()
    with torch.no_grad():
        for step in steps[:done]:
            u = model.uniforms(n, int(step.sum()), gen)
            x[:, step] = model.distribution.sample_step(model.forward(x, **context), x, step, u).to(x.dtype)
    _sync(model)
    elapsed = time.perf_counter() - start
    return elapsed * len(steps) / done, done < len(steps)


def cached_time(model, n: int, context) -> float:
    _sync(model)
    start = time.perf_counter()
    model.sample(n, generator=torch.Generator().manual_seed(0), cache=True, **context)
    _sync(model)
    return time.perf_counter() - start


def cache_bytes(model, n: int) -> int:
    """Bytes held by the cache: ring buffers (the per-step plan) or one full buffer per value."""
    inc = model.incremental
    per = torch.finfo(model.dtype).bits // 8
    if inc._planned(model):
        return inc.plan.ring_bytes(n, per)
    return sum(c.channels * (inc.positions + 1) * n * per for c in inc.steps)


def row(label: str, model, n: int, max_steps: int) -> None:
    context = model.example_context(n)
    naive, extrapolated = naive_time(model, n, context, max_steps)
    cached = cached_time(model, n, context)
    elements = model.order.numel()
    mark = "~" if extrapolated else " "
    print(f"{label:>28} {mark}{naive:11.2f} {cached:10.2f} {naive / cached:8.1f}x {1e3 * cached / elements:12.3f} {cache_bytes(model, n) / 2**20:10.1f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="shorter events (a smoke run)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    device = args.device
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(f"{'model':>28} {'naive s':>12} {'cached s':>10} {'speedup':>9} {'ms/element':>12} {'cache MiB':>10}")
    lengths = (256, 1024) if args.quick else (1000, 4000, 16000)
    for length in lengths:
        spec = arspec.load_spec(SPECS / "wavenet.yaml", overrides=[f"event.shape=[{length}]"])
        model = arspec.compile(spec, seed=0, device=device).eval()
        row(f"wavenet 30 layers T={length}", model, args.batch, max_steps=32)
    for name, shape in (("gated_pixelcnn", "[1,28,28]"), ("pixelcnn_rgb", "[3,32,32]"), ("pixelsnail", "[1,28,28]"),
                        ("transformer_text", "[128]" if args.quick else "[512]"),
                        ("video_pixel_network_small", "[4,1,16,16]" if args.quick else "[10,1,32,32]")):
        spec = arspec.load_spec(SPECS / f"{name}.yaml", overrides=[f"event.shape={shape}"])
        row(f"{name} {shape}", arspec.compile(spec, seed=0, device=device).eval(), args.batch, max_steps=48 if args.quick else 128)
    parallel_multiscale(max(args.batch, 4), device)


def parallel_multiscale(n: int, device: str = "cpu") -> None:
    """Multiscale PixelCNN's parallel steps (Reed et al. 2017) against raster Gated PixelCNN at 28x28,
    same batch: network passes and seconds per batch of samples."""
    print(f"\n{'model (1x28x28, batch ' + str(n) + ')':>34} {'passes':>7} {'seconds':>9} {'vs multiscale':>14}")
    multiscale = arspec.compile(arspec.load_spec(SPECS / "multiscale_pixelcnn.yaml"), seed=0, device=device).eval()
    gated = arspec.compile(arspec.load_spec(SPECS / "gated_pixelcnn.yaml"), seed=0, device=device).eval()
    rows = []
    for label, model, cache in (("multiscale_pixelcnn (naive loop)", multiscale, False),
                                ("gated_pixelcnn cached", gated, True),
                                ("gated_pixelcnn naive", gated, False)):
        _sync(model)
        start = time.perf_counter()
        model.sample(n, generator=torch.Generator().manual_seed(0), cache=cache)
        _sync(model)
        rows.append((label, len(model.steps()), time.perf_counter() - start))
    for label, passes, seconds in rows:
        print(f"{label:>34} {passes:7d} {seconds:9.2f} {seconds / rows[0][2]:13.1f}x")


if __name__ == "__main__":
    main()
