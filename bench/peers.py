"""arspec against the implementations people use, installed from the package index (the `bench`
extra: `pip install -e ".[bench]"`), the same architecture on both sides, measured interleaved in
one run, reported as ratios (these machines are noisy: absolute times mean little).

* WaveNet generation — r9y9's `wavenet_vocoder` (30 layers in 3 stacks, 64 residual / 128 gate /
  256 skip channels, kernel 2, 256-way softmax) against `specs/wavenet.yaml`: milliseconds per
  sample at batch 1 (the peer's own `incremental_forward`) and batch 16 (its layers'
  `incremental_forward` driven by a batched loop: its `incremental_forward` hard-codes batch 1 when
  it samples — the shim lives here, not in the peer).
* MADE — `zuko.nn.MaskedMLP` on 784 binary pixels with hidden layers [500, 500] against
  `specs/made.yaml` without direct connections (the same masked MLP): a training step (Adam, batch
  100) and log-probability throughput (batch 1000).

    python bench/peers.py [--quick] [--rounds 3] [--device cuda]"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import arspec  # noqa: E402
from bench.machine import describe  # noqa: E402

arspec.tune_allocator()        # freed memory kept for reuse; every side of a comparison runs in such a process


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def peer_wavenet():
    from wavenet_vocoder import WaveNet
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = WaveNet(out_channels=256, layers=30, stacks=3, residual_channels=64, gate_channels=128, skip_out_channels=256,
                        kernel_size=2, dropout=0.0, weight_normalization=False, scalar_input=False).eval()
    model.make_generation_fast_()
    return model


@torch.no_grad()
def peer_generate_batched(model, batch: int, steps: int) -> torch.Tensor:
    """The peer's layers stepped incrementally for a batch, sampling every item (Gumbel argmax)."""
    model.clear_buffer()
    x = torch.zeros(batch, 1, model.out_channels, device=next(model.parameters()).device)
    x[:, :, 127] = 1
    for _ in range(steps):
        h = model.first_conv.incremental_forward(x)
        skips = None
        for layer in model.conv_layers:
            h, s = layer.incremental_forward(h, None, None)
            skips = s if skips is None else (skips + s) * 0.7071067811865476
        y = skips
        for f in model.last_conv_layers:
            y = f.incremental_forward(y) if hasattr(f, "incremental_forward") else f(y)
        logits = y.view(batch, -1)
        sample = torch.argmax(logits - torch.log(-torch.log(torch.rand_like(logits))), dim=1)
        x = F.one_hot(sample, model.out_channels).float().view(batch, 1, -1)
    model.clear_buffer()
    return x


def wavenet(args) -> list[tuple[str, float]]:
    peer = peer_wavenet().to(args.device)
    spec = arspec.load_spec(ROOT / "specs" / "wavenet.yaml", overrides=[f"event.shape=[{args.length}]"])
    ours = arspec.compile(spec, seed=0, device=args.device).eval()
    half = arspec.load_spec(ROOT / "specs" / "wavenet.yaml", overrides=[f"event.shape=[{args.length // 2}]"])
    ours_half = arspec.compile(half, seed=0, device=args.device).eval()

    def gen(seed: int) -> torch.Generator:
        return torch.Generator(device=args.device).manual_seed(seed)
    n_peer, n_ours = sum(p.numel() for p in peer.parameters()), sum(p.numel() for p in ours.parameters())
    print(f"WaveNet: wavenet_vocoder {n_peer:,} parameters, arspec {n_ours:,} (the peer's first 1x1 has a bias, arspec's embedding none)")
    ratios: list[tuple[str, float]] = []
    with torch.no_grad():                    # one warm-up call each (arspec plans its cache on first use)
        peer.incremental_forward(T=16, tqdm=lambda x: x)
        peer_generate_batched(peer, 16, 8)
    ours.sample(1, generator=gen(99))
    ours_half.sample(16, generator=gen(99))
    sync(args.device)
    for r in range(args.rounds):
        with torch.no_grad():
            peer_1 = seconds(lambda: (peer.incremental_forward(T=args.length, tqdm=lambda x: x), sync(args.device))) / args.length
        ours_1 = seconds(lambda r=r: (ours.sample(1, generator=gen(r)), sync(args.device))) / args.length
        peer_16 = seconds(lambda: (peer_generate_batched(peer, 16, args.length // 2), sync(args.device))) / (args.length // 2) / 16
        ours_16 = seconds(lambda r=r: (ours_half.sample(16, generator=gen(r)), sync(args.device))) / (args.length // 2) / 16
        print(f"  round {r + 1}: batch 1: peer {peer_1 * 1e3:.2f} ms/sample, arspec {ours_1 * 1e3:.2f} ms/sample ({peer_1 / ours_1:.1f}x); "
              f"batch 16: peer {peer_16 * 1e3:.3f} ms/sample, arspec {ours_16 * 1e3:.3f} ms/sample ({peer_16 / ours_16:.1f}x)")
        ratios += [("WaveNet generation, batch 1", peer_1 / ours_1), ("WaveNet generation, batch 16", peer_16 / ours_16)]
    return ratios


def made(args) -> list[tuple[str, float]]:
    import zuko
    torch.manual_seed(0)
    spec = arspec.load_spec(ROOT / "specs" / "made.yaml", overrides=["graph.out.direct=false"])
    ours = arspec.compile(spec, seed=0, device=args.device)
    order = torch.arange(784)
    peer = zuko.nn.MaskedMLP(order[:, None] > order[None, :], [500, 500]).to(args.device)
    n_peer, n_ours = sum(p.numel() for p in peer.parameters()), sum(p.numel() for p in ours.parameters())
    print(f"MADE 784-500-500-784: zuko {n_peer:,} parameters, arspec {n_ours:,}")
    data = torch.randint(0, 2, (1000, 1, 28, 28), device=args.device)

    def peer_nll(x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1).float()
        return F.binary_cross_entropy_with_logits(peer(flat), flat, reduction="none").sum(1)

    def ours_nll(x: torch.Tensor) -> torch.Tensor:
        return -ours.log_prob(x)

    def train_rate(nll, params, steps: int) -> float:
        opt = torch.optim.Adam(params, lr=1e-3)

        def run() -> None:
            for i in range(steps):
                opt.zero_grad()
                nll(data[(i * 100) % 900:(i * 100) % 900 + 100]).mean().backward()
                opt.step()
        run()
        sync(args.device)
        return steps / seconds(lambda: (run(), sync(args.device)))

    @torch.no_grad()
    def eval_rate(nll, repeats: int) -> float:
        nll(data)
        return repeats * len(data) / seconds(lambda: ([nll(data) for _ in range(repeats)], sync(args.device)))

    ratios: list[tuple[str, float]] = []
    for r in range(args.rounds):
        steps = 5 if args.quick else 20
        peer_t, ours_t = train_rate(peer_nll, peer.parameters(), steps), train_rate(ours_nll, ours.parameters(), steps)
        peer_e, ours_e = eval_rate(peer_nll, 3), eval_rate(ours_nll, 3)
        print(f"  round {r + 1}: training steps/s peer {peer_t:.1f}, arspec {ours_t:.1f} ({ours_t / peer_t:.2f}x); "
              f"log-prob items/s peer {peer_e:,.0f}, arspec {ours_e:,.0f} ({ours_e / peer_e:.2f}x)")
        ratios += [("MADE training step", ours_t / peer_t), ("MADE log-prob throughput", ours_e / peer_e)]
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="shorter runs (about a minute)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    args.length = 256 if args.quick else 1024
    args.rounds = 2 if args.quick and args.rounds == 3 else args.rounds
    print(f"{describe()}; ratios are peer time / arspec time (higher: arspec faster)")
    ratios = wavenet(args) + made(args)
    print("median ratios (arspec faster by; of an even count, the mean of the middle two):")
    for name in dict.fromkeys(n for n, _ in ratios):
        print(f"  {name}: {statistics.median(v for n, v in ratios if n == name):.2f}x")


if __name__ == "__main__":
    main()
