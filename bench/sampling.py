"""Naive against cached sampling, side by side in one run.

    python bench/sampling.py [--quick] [--batch N] [--device cuda]
Naive sampling recomputes the whole network at every step, so its cost per step is constant: it
is timed on its first steps and the total extrapolated (marked '~'). Cached sampling always runs to
the end: on the CPU through the compiled per-step plan (numpy, ring buffers), elsewhere through
the torch path. Memory is what the cache holds. Targets: WaveNet <= 1.2 ms per sample at batch 1,
flat in the length; Gated PixelCNN 1x28x28 >= 20x naive; R->G->B PixelCNN 3x32x32 >= 40x naive;
the transformer at 512 tokens and PixelSNAIL at 28x28 >= 25x naive (attention declared by its step:
keys and values of each position computed once, kept for the whole event, the query of the new
position attending over them in the C step); the Video Pixel Network at 10 frames of 32x32
>= 20x naive (frame by frame: the encoder and the recurrence over frames once per frame, the decoder
per pixel); the Spatial LSTM and PixelRNN's Row LSTM (declared by their steps) at 28x28 >= 100x naive.
Then multiscale PixelCNN's O(log N) parallel steps against raster sampling; last, Parallel
WaveNet's student against its teacher's cached generation for one second of audio (target >= 100x;
`--parallel-wavenet TEACHER STUDENT` with trained checkpoints adds the teacher's NLL of real audio,
of its own samples and of the student's)."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from machine import describe  # bench/, this script's folder

import arspec

arspec.tune_allocator()        # freed memory kept for reuse; every side of a comparison runs in such a process

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
    """Bytes held by the cache: ring buffers (the per-step plan; on an accelerator the static
    program's rings with their scratch slots, as allocated) or one full buffer per value."""
    inc = model.incremental
    per = torch.finfo(model.dtype).bits // 8
    engine = inc.engine_for(model)
    if engine == "static":
        return inc._static_program(model, n, model.example_context(n), record=False).cache_bytes()
    if engine == "plan":
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
    parser.add_argument("--parallel-wavenet", nargs=2, metavar=("TEACHER", "STUDENT"),
                        help="only the Parallel WaveNet rows, with these trained checkpoints (speed and quality)")
    args = parser.parse_args()
    if args.parallel_wavenet:
        parallel_wavenet(args.device, *args.parallel_wavenet)
        return
    device = args.device
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(describe())
    print(f"{'model':>28} {'naive s':>12} {'cached s':>10} {'speedup':>9} {'ms/element':>12} {'cache MiB':>10}")
    lengths = (256, 1024) if args.quick else (1000, 4000, 16000)
    for length in lengths:
        spec = arspec.load_spec(SPECS / "wavenet.yaml", overrides=[f"event.shape=[{length}]"])
        model = arspec.compile(spec, seed=0, device=device).eval()
        row(f"wavenet 30 layers T={length}", model, args.batch, max_steps=32)
    for name, shape in (("gated_pixelcnn", "[1,28,28]"), ("pixelcnn_rgb", "[3,32,32]"), ("pixelsnail", "[1,28,28]"),
                        ("spatial_lstm", "[1,16,16]" if args.quick else "[1,28,28]"),
                        ("row_lstm", "[1,16,16]" if args.quick else "[1,28,28]"),
                        ("diagonal_bilstm", "[1,16,16]" if args.quick else "[1,28,28]"),
                        ("transformer_text", "[128]" if args.quick else "[512]"),
                        ("video_pixel_network_small", "[4,1,16,16]" if args.quick else "[10,1,32,32]")):
        spec = arspec.load_spec(SPECS / f"{name}.yaml", overrides=[f"event.shape={shape}"])
        row(f"{name} {shape}", arspec.compile(spec, seed=0, device=device).eval(), args.batch, max_steps=48 if args.quick else 128)
    parallel_multiscale(max(args.batch, 4), device)
    parallel_wavenet(device, samples=4000 if args.quick else 16000)


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



def parallel_wavenet(device: str = "cpu", teacher_dir: str | None = None, student_dir: str | None = None,
                     samples: int = 16000, repeats: int = 15) -> None:
    """Parallel WaveNet's student (one parallel pass per flow) against its teacher's cached
    generation, for `samples` samples (one second at 16 kHz), batch 1, given the same log-mel
    conditioning. With trained checkpoints (`--parallel-wavenet TEACHER STUDENT`), also the
    quality: the teacher's NLL per sample of the real audio, of its own samples and of the
    student's (the weights are convolutional: the checkpoints load at any length)."""
    from arspec.data import load_data
    longer = [f"event.shape=[{samples}]"]
    if teacher_dir and student_dir:
        teacher = arspec.load_model(teacher_dir, device=device, overrides=longer)
        student = arspec.load_model(student_dir, device=device, overrides=longer)
        data = load_data(teacher.spec, "speech")
        loudest = int(torch.argmax(teacher.distribution.encode(data.test, torch.float64).std(dim=1)))   # not a crop of silence
        context = {k: v[loudest:loudest + 1].to(device) for k, v in data.context(teacher.spec, "test").items()}
        real = data.test[loudest:loudest + 1].to(device)
        trained = "trained"
    else:
        teacher = arspec.compile(arspec.load_spec(SPECS / "wavenet_teacher.yaml", overrides=longer), seed=0, device=device).eval()
        student = arspec.compile(arspec.load_spec(SPECS / "parallel_wavenet.yaml", overrides=longer), seed=0, device=device).eval()
        context = teacher.example_context(1)
        real, trained = None, "untrained (speed only)"
    print(f"\nParallel WaveNet, {samples} samples ({samples / 16000:.2f} s at 16 kHz), batch 1, {trained}:")
    with torch.inference_mode():
        student.sample(1, generator=torch.Generator().manual_seed(0), **context)          # warm-up
        _sync(student)
        times = []
        for r in range(repeats):
            start = time.perf_counter()
            student_x = student.sample(1, generator=torch.Generator().manual_seed(r), **context)
            _sync(student)
            times.append(time.perf_counter() - start)
        student_s = sorted(times)[len(times) // 2]
        _sync(teacher)
        start = time.perf_counter()
        teacher_x = teacher.sample(1, generator=torch.Generator().manual_seed(0), cache=True, **context)
        _sync(teacher)
        teacher_s = time.perf_counter() - start
    print(f"{'teacher, cached generation':>40} {teacher_s:10.3f} s  {samples / teacher_s:10.0f} samples/s")
    print(f"{'student, parallel flows (median of ' + str(repeats) + ')':>40} {student_s:10.3f} s  {samples / student_s:10.0f} samples/s")
    print(f"{'student speed-up':>40} {teacher_s / student_s:10.1f}x   (target >= 100x)")
    if real is None:
        return
    d = teacher.distribution
    quantized = torch.round((student_x.clamp(-1, 1) + 1) * (d.classes - 1) / 2).long()
    with torch.inference_mode():
        for label, x in (("real audio", real), ("teacher samples", teacher_x), ("student samples", quantized)):
            nll = float(-teacher.log_prob(x, **context).mean()) / samples
            print(f"{'teacher NLL of ' + label:>40} {nll:10.3f} nats per sample")


if __name__ == "__main__":
    main()
