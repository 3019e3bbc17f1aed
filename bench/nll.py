"""Test NLL of NADE, MADE, PixelCNN, Gated PixelCNN and multiscale PixelCNN trained on the bundled MNIST subset with one
fixed budget, beside the papers' figures on full binarized MNIST (ours use 4,000 training digits,
so absolute numbers differ; the ranking is what to compare).

    python bench/nll.py [--epochs 5] [--limit N]"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import arspec  # noqa: E402
from arspec.data import load_data  # noqa: E402
from arspec.train import TrainConfig, evaluate_nll, train  # noqa: E402

PAPERS = {"nade": 88.33, "made": 86.64, "pixelcnn": 81.30, "gated_pixelcnn": None, "multiscale_pixelcnn": None}
NOTES = {"gated_pixelcnn": "(Diagonal BiLSTM 79.20)", "multiscale_pixelcnn": "(not reported)"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--limit", type=int, default=None, help="training items (default: all 4,000)")
    args = parser.parse_args()
    rows = []
    for name in PAPERS:
        spec = arspec.load_spec(ROOT / "specs" / f"{name}.yaml")
        data = load_data(spec)
        with tempfile.TemporaryDirectory() as out:
            config = TrainConfig.from_spec(spec, Path(out), epochs=args.epochs, limit=args.limit, quiet=True)
            result = train(spec, data, config)
            model = arspec.load_model(out)
            nats = evaluate_nll(model, data.test, {})
        rows.append((name, nats, result["seconds"]))
        print(f"trained {name}: {nats:.2f} nats in {result['seconds']} s", flush=True)
    print(f"\n{'model':>16} {'test NLL (nats)':>16} {'paper (full MNIST)':>20} {'train s':>8}")
    for name, nats, seconds in rows:
        paper = PAPERS[name]
        shown = f"{paper:.2f}" if paper else NOTES.get(name, "-")
        print(f"{name:>16} {nats:16.2f} {shown:>20} {seconds:8.1f}")
    order = [r[0] for r in sorted(rows, key=lambda r: r[1])]
    print(f"\nranking (best first): {', '.join(order)}; papers: gated_pixelcnn/pixelcnn < made < nade")


if __name__ == "__main__":
    main()
