"""Test NLL of the zoo's binarized-MNIST models on the standard binarized MNIST (Larochelle &
Murray 2011: 50,000 / 10,000 / 10,000, the fixed binarization the papers use), several seeds with
their spread, beside each paper's figure and with the training budget used. Our budgets are CPU
budgets, far shorter than the papers' (which trained for days on GPUs), so the deep models stay
well above their papers' figures; MADE and NADE are cheap enough to train properly.

    python bench/nll.py [--models made,nade] [--seeds 3] [--epochs N] [--quick]

`--models video_pixel_network_small` trains the scaled Video Pixel Network on Moving MNIST generated
from the binarized digits (10 frames of 32x32, 1,562 training videos) and reports nats per frame,
overall and for frames 6-10 given frames 1-5, with the NLL of each frame (the first has no past),
beside the paper's 87.6 nats per frame (64x64, 256 levels, frames 11-20 given 1-10, far more
training).

`--quick` trains on the bundled 5,000-digit subset (4,000 training digits; its figures are not
comparable with the papers'). Each model trains with its spec's settings (early stopping on the
validation split) unless --epochs caps them; order-agnostic models are evaluated exactly in raster
order and as an ensemble of --orderings orderings; MADE also as the ensemble of its mask sets."""
from __future__ import annotations

import argparse
import contextlib
import math
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import arspec  # noqa: E402

arspec.tune_allocator()        # freed memory kept for reuse; every side of a comparison runs in such a process
from arspec.data import load_data  # noqa: E402
from arspec.train import TrainConfig, evaluate_nll, train  # noqa: E402

# test NLL in nats on the standard binarized MNIST, as published
PAPERS = {
    "nade": (88.33, "NADE, Larochelle & Murray 2011"),
    "made": (86.64, "MADE 32 masks, Germain et al. 2015 (one mask, 2 layers: 89.59)"),
    "made_wide": (86.64, "MADE 32 masks, 1 layer, Germain et al. 2015 (one mask, 1 layer: 88.40)"),
    "deep_nade": (85.10, "EoNADE 2 layers, 128 orderings, Uria et al. 2014"),
    "convnade": (80.82, "ConvNADE + DeepNADE ensemble, Uria et al. 2016"),
    "pixelcnn": (81.30, "PixelCNN, van den Oord et al. 2016"),
    "gated_pixelcnn": (80.10, "Gated PixelCNN (paper's figure is for a deeper net)"),
    "row_lstm": (80.54, "Row LSTM, van den Oord et al. 2016"),
    "diagonal_bilstm": (79.20, "Diagonal BiLSTM, van den Oord et al. 2016"),
    "multiscale_pixelcnn": (None, "not reported on binarized MNIST"),
    "pixelsnail": (None, "PixelSNAIL reports CIFAR-10 (2.85 bits/dim), not binarized MNIST"),
    "video_pixel_network_small": (87.6, "VPN, Kalchbrenner et al. 2016: nats per frame on 64x64 Moving MNIST, 256 levels"),
}
VIDEO = ("video_pixel_network_small",)


@contextlib.contextmanager
def trained(name: str, data_name: str, seed: int, args: argparse.Namespace) -> Iterator[tuple[Any, Any, dict]]:
    """Train a zoo spec with its own settings (epochs capped by --epochs) on `data_name`: the best
    model, the data and the training summary, while its run folder exists."""
    spec = arspec.load_spec(ROOT / "specs" / f"{name}.yaml")
    data = load_data(spec, data_name)
    flags = {"quiet": True, "seed": seed, **({"epochs": args.epochs} if args.epochs else {})}
    with tempfile.TemporaryDirectory() as out:
        result = train(spec, data, TrainConfig.from_spec(spec, Path(out), **flags))
        yield arspec.load_model(out), data, result


def run_video(name: str, seed: int, args: argparse.Namespace) -> dict:
    """Train a video model on generated Moving MNIST; nats per frame on the test videos."""
    import torch
    with trained(name, "moving-mnist:train=256,test=32" if args.quick else "moving-mnist", seed, args) as (model, data, result):
        with torch.no_grad():
            terms = torch.cat([model.log_prob_elements(data.test[i:i + 16]) for i in range(0, len(data.test), 16)])
    per_frame = (-terms.flatten(2).sum(2)).mean(0).tolist()            # nats of each frame, given the earlier ones
    half = len(per_frame) // 2
    return {"nats": sum(per_frame) / len(per_frame), "later": sum(per_frame[half:]) / (len(per_frame) - half),
            "per_frame": per_frame, "ensemble": None, "epochs": result["epochs"], "seconds": result["seconds"],
            "train": len(data.train)}


def spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation."""
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else float("nan")
    return m, sd


def run_one(name: str, seed: int, args: argparse.Namespace) -> dict:
    with trained(name, "binarized-mnist-5k" if args.quick else "binarized-mnist", seed, args) as (model, data, result):
        nats = evaluate_nll(model, data.test, {})
        ensemble = None
        if model.agnostic:
            ensemble = evaluate_nll(model, data.test, {}, orderings=args.orderings)
        elif model.num_masks > 1:
            ensemble = evaluate_nll(model, data.test, {}, ensemble=True)
    return {"nats": nats, "ensemble": ensemble, "epochs": result["epochs"], "seconds": result["seconds"], "train": len(data.train)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="made,nade", help=f"comma-separated, from {', '.join(PAPERS)}")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None, help="cap on the epochs (default: the spec's, with early stopping)")
    parser.add_argument("--orderings", type=int, default=8, help="orderings in an order-agnostic model's ensemble")
    parser.add_argument("--quick", action="store_true", help="the 5,000-digit subset instead of the standard set")
    args = parser.parse_args()
    rows = []
    for name in args.models.split(","):
        runs = []
        for seed in range(args.seeds):
            r = run_video(name, seed, args) if name in VIDEO else run_one(name, seed, args)
            runs.append(r)
            extra = f", ensemble {r['ensemble']:.2f}" if r["ensemble"] is not None else ""
            if name in VIDEO:
                half = len(r["per_frame"]) // 2
                extra = (f" per frame; frames {half + 1}-{len(r['per_frame'])} given 1-{half}: {r['later']:.2f} nats per frame; "
                         f"each frame: {' '.join(f'{v:.1f}' for v in r['per_frame'])}")
            print(f"{name} seed {seed}: {r['nats']:.2f} nats{extra} ({r['epochs']} epochs, {r['seconds']} s)", flush=True)
        rows.append((name, runs))
    data = "5,000-digit subset (--quick)" if args.quick else "standard binarized MNIST, 50,000 training digits"
    if all(name in VIDEO for name, _ in rows):
        data = "generated Moving MNIST test videos, nats per frame"
    elif any(name in VIDEO for name, _ in rows):
        data += "; video models: nats per frame on generated Moving MNIST test videos"
    print(f"\ntest NLL in nats on the {data}; mean ± standard deviation over {args.seeds} seed(s)")
    print(f"{'model':>20} {'ours':>16} {'ensemble':>16} {'paper':>7}  budget (per seed, 2 CPU cores)")
    for name, runs in rows:
        m, sd = spread([r["nats"] for r in runs])
        ens = [r["ensemble"] for r in runs if r["ensemble"] is not None]
        ens_text = "{:8.2f} ± {:5.2f}".format(*spread(ens)) if ens else f"{'-':>16}"
        paper, note = PAPERS[name]
        epochs = sum(r["epochs"] for r in runs) / len(runs)
        minutes = sum(r["seconds"] for r in runs) / len(runs) / 60
        paper_text = f"{paper:7.2f}" if paper else f"{'-':>7}"
        print(f"{name:>20} {m:8.2f} ± {sd:5.2f} {ens_text} {paper_text}  {epochs:.0f} epochs, {minutes:.1f} min ({note})")


if __name__ == "__main__":
    main()
