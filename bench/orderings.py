"""An order-agnostic model's exact test NLL as ensembles over 1, 2, 4, ... K orderings (Uria et
al. 2014's EoNADE protocol): each ordering's exact log-likelihood of every item is computed once
(D passes per item for a D-element event) and kept in the run folder under the checkpoint's hash,
so a later session adds orderings instead of starting again; the ensemble of the first k averages p(x) over them.

    python bench/orderings.py runs/deep-nade [--orderings 8] [--items 1000] [--max-memory 2GB]

Ordering 0 is the model's own (raster for the zoo's specs); the others are random with the spec's
seed, the same in every session (`ARModel.evaluation_orders`); the table gives the ensembles with
the model's own ordering first and over the random ones only (the papers' protocol). `--items N` evaluates N test items
spread evenly over the test split (all by default); the spread of the per-item terms gives the
standard error printed beside each figure."""
from __future__ import annotations

import argparse
import hashlib
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import arspec  # noqa: E402
from arspec.checkpoint import load_model, resolve  # noqa: E402
from arspec.cli.parser import byte_size  # noqa: E402
from arspec.data import load_data  # noqa: E402
from arspec.fileio import write_with  # noqa: E402


def kept_terms(path: Path, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """The array at `path`, or compute() written there atomically (a stopped run loses nothing)."""
    if path.exists():
        return np.load(path, allow_pickle=False)
    values = compute()

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as f:              # a file object: np.save would add ".npy" to a path
            np.save(f, values, allow_pickle=False)
    write_with(path, save)
    return values


def ensemble_nll(terms: np.ndarray) -> tuple[float, float]:
    """Mean -log of p averaged over the rows' orderings (terms: (K, N) log-likelihoods), and its
    standard error over the items."""
    k = terms.shape[0]
    per_item = -(np.logaddexp.reduce(terms, axis=0) - math.log(k))
    return float(per_item.mean()), float(per_item.std(ddof=1) / math.sqrt(len(per_item))) if len(per_item) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a training folder (its best checkpoint) or a checkpoint file")
    parser.add_argument("--orderings", type=int, default=8)
    parser.add_argument("--items", type=int, default=None, help="test items, spread evenly over the split (default: all)")
    parser.add_argument("--data", default=None, help="dataset (default: the one the checkpoint was trained on)")
    parser.add_argument("--max-memory", type=byte_size, default=None, metavar="SIZE")
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args()
    arspec.tune_allocator()
    model = load_model(args.run).eval()
    weights = Path(getattr(model, "checkpoint_path", None) or resolve(args.run))
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:12]       # kept terms belong to these weights only
    if not model.agnostic:
        parser.error(f"{args.run}: not an order-agnostic model (ordering: {{type: agnostic}})")
    if args.max_memory:
        model.memory_budget = args.max_memory
    data = load_data(model.spec, args.data or model.checkpoint_meta.get("data"))
    test = data.split("test")
    items = np.arange(len(test)) if args.items is None else np.unique(np.linspace(0, len(test) - 1, args.items).round().astype(int))
    x = torch.as_tensor(np.asarray(test))[torch.as_tensor(items)]
    folder = (args.run if args.run.is_dir() else args.run.parent) / "orderings"
    folder.mkdir(exist_ok=True)
    rows = []
    for k, order in enumerate(model.evaluation_orders(args.orderings)):
        start = time.time()

        def compute(order: torch.Tensor = order) -> np.ndarray:
            with torch.no_grad():
                return torch.cat([model.log_prob_in_order(x[i:i + args.batch_size], order)
                                  for i in range(0, len(x), args.batch_size)]).double().numpy()
        path = folder / f"{digest}-test-{len(items)}items-ordering{k}.npy"
        was_kept = path.exists()
        rows.append(kept_terms(path, compute))
        print(f"ordering {k}: {-rows[-1].mean():.2f} nats ({'kept' if was_kept else f'{time.time() - start:.0f} s'})", flush=True)
    terms = np.stack(rows)
    print(f"\n{model.spec.name} ({weights.name}, sha256 {digest}), {len(items):,} test items: exact NLL in nats, ensembles "
          f"over k orderings (± the standard error over items)")
    print(f"  {'k':>4}  {'own ordering first':>22}  {'random orderings only':>22}")
    for k in sorted({*(2 ** i for i in range(len(rows).bit_length())), len(rows) - 1, len(rows)} - {0}):
        first = "{:8.2f} (± {:.2f})".format(*ensemble_nll(terms[:k])) if k <= len(rows) else ""
        random = "{:8.2f} (± {:.2f})".format(*ensemble_nll(terms[1:k + 1])) if k + 1 <= len(rows) else ""
        print(f"  {k:4d}  {first:>22}  {random:>22}")
    print("(ordering 0 is the model's own; orderless training sees random subsets, so a structured ordering such as "
          "raster can fare worse than random ones: Uria et al. 2014 ensemble random orderings)")

if __name__ == "__main__":
    main()
