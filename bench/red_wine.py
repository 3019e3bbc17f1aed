"""RNADE and order-agnostic deep RNADE on the red wine data with the RNADE papers' 10-fold
protocol: for each fold k, train on the other folds (one of them for early stopping), standardise
with the nine non-test folds' statistics, and report the test log-likelihood per wine in nats;
the figure is the mean and standard error over the folds, beside the published ones (Uria et al.
2013: RNADE-MoG -9.36; Uria et al. 2014: ensembles of deep order-agnostic RNADE -8.76).

    python bench/red_wine.py [--folds 1-10] [--orderings 16] [--epochs N] [--models rnade,deep_rnade]
                             [--set KEY=VALUE ...] [--seed S] [--refit]

Our runs are CPU runs with Adam and early stopping on one fold, far shorter than the papers'."""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import arspec  # noqa: E402

arspec.tune_allocator()        # freed memory kept for reuse; every side of a comparison runs in such a process
from arspec.data import load_data  # noqa: E402
from arspec.data.splits import Splits  # noqa: E402
from arspec.train import TrainConfig, evaluate_nll, train  # noqa: E402

PAPERS = {"rnade": ("RNADE-MoG, Uria et al. 2013", -9.36), "deep_rnade": ("deep order-agnostic RNADE ensemble, Uria et al. 2014", -8.76)}


def folds(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def mean_and_error(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, float("nan")
    var = sum((v - m) ** 2 for v in values) / (len(values) - 1)
    return m, math.sqrt(var / len(values))


def refit(spec: object, data: Splits, first: dict, out: Path, flags: dict) -> tuple[object, dict]:
    """The model trained again from scratch on all nine non-test folds (the validation fold
    joined to the training folds) for the epochs at which the first run's validation was best:
    early stopping chooses the length, and no wine the model could learn from is held back."""
    best_epoch = max(1, math.ceil(first["best_step"] / math.ceil(len(data.train) / spec.training.batch_size)))
    joined = Splits(torch.cat([data.train, data.validation]), data.validation, data.test, f"{data.name} (refit)")
    result = train(spec, joined, TrainConfig.from_spec(spec, out, **{**flags, "epochs": best_epoch, "patience": best_epoch + 1}))
    return arspec.load_model(out / "last.safetensors"), result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folds", default="1-10", help="test folds, e.g. 1-10 or 3")
    parser.add_argument("--orderings", type=int, default=16, help="orderings in the deep RNADE ensemble")
    parser.add_argument("--epochs", type=int, default=None, help="cap on the epochs (default: the spec's, with early stopping)")
    parser.add_argument("--models", default="rnade,deep_rnade")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a spec value in every model run, e.g. --set distribution.mixtures=20 (repeatable)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights and the data order")
    parser.add_argument("--refit", action="store_true",
                        help="after early stopping, train again on all nine non-test folds for the best run's epochs")
    args = parser.parse_args()
    results: dict[str, list[tuple[float, ...]]] = {}
    for name in args.models.split(","):
        spec = arspec.load_spec(ROOT / "specs" / f"{name}.yaml", overrides=args.set)
        for k in folds(args.folds):
            data = load_data(spec, f"red-wine:{k}")
            flags = {"quiet": True, "seed": args.seed, **({"epochs": args.epochs} if args.epochs else {})}
            with tempfile.TemporaryDirectory() as out:
                result = train(spec, data, TrainConfig.from_spec(spec, Path(out), **flags))
                model = arspec.load_model(out)
                if args.refit:
                    model, result = refit(spec, data, result, Path(out) / "refit", flags)
                single = -evaluate_nll(model, data.test, {})
                ensemble = -evaluate_nll(model, data.test, {}, orderings=args.orderings) if model.agnostic else single
            results.setdefault(name, []).append((single, ensemble, result["seconds"], result["epochs"]))
            print(f"{name} fold {k}: test log-likelihood {single:.3f} nats per wine"
                  + (f", ensemble of {args.orderings} orderings {ensemble:.3f}" if model.agnostic else "")
                  + f" ({result['epochs']} epochs, {result['seconds']} s)", flush=True)
    print(f"\n{'model':>12} {'folds':>5} {'one ordering':>18} {'ensemble':>18} {'paper':>8}  budget")
    for name, rows in results.items():
        single, se1 = mean_and_error([r[0] for r in rows])
        ens, se2 = mean_and_error([r[1] for r in rows])
        label, paper = PAPERS.get(name, ("", float("nan")))
        ens_text = f"{ens:8.3f} ± {se2:5.3f}" if name == "deep_rnade" else f"{'-':>16}"
        epochs = sum(r[3] for r in rows) / len(rows)
        seconds = sum(r[2] for r in rows) / len(rows)
        print(f"{name:>12} {len(rows):>5} {single:8.3f} ± {se1:5.3f}   {ens_text} {paper:8.2f}  "
              f"{epochs:.0f} epochs, {seconds:.0f} s per fold on this machine ({label})")
    print("\nnats per standardised wine, higher is better; ± is the standard error over folds")


if __name__ == "__main__":
    main()
