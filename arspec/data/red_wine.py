"""The red wine benchmark of the RNADE papers (Uria et al. 2013, 2014): 1,599 wines x 11
physicochemical attributes and the papers' ten cross-validation folds.

`red-wine:K` tests on fold K, validates (early stopping) on fold K+1 (fold 1 after fold 10) and
trains on the other eight; every attribute is standardised with the mean and standard deviation of
the nine non-test folds, as the papers' protocol says, so log-likelihoods are per standardised wine."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from arspec.data.splits import DataError, Splits

FOLDS = 10
FILE = Path(__file__).resolve().parent / "bundled" / "red_wine.npz"


def parse_fold(name: str) -> int:
    """The test fold of `red-wine` (1) or `red-wine:K`."""
    if name == "red-wine":
        return 1
    text = name.split(":", 1)[1]
    if not text.isdigit() or not 1 <= int(text) <= FOLDS:
        raise DataError(f"{name!r}: the red wine test fold must be 1..{FOLDS} (red-wine:3)")
    return int(text)


def red_wine(test_fold: int) -> Splits:
    """Standardised train / validation / test wines for one fold of the papers' protocol."""
    with np.load(FILE, allow_pickle=False) as f:
        x, fold = f["x"].astype(np.float64), f["fold"]
    validation_fold = test_fold % FOLDS + 1
    seen = fold != test_fold
    mean, std = x[seen].mean(axis=0), x[seen].std(axis=0)
    z = torch.as_tensor(((x - mean) / std).astype(np.float32))
    train = seen & (fold != validation_fold)
    return Splits(z[torch.as_tensor(train)], z[torch.as_tensor(fold == validation_fold)], z[torch.as_tensor(~seen)],
                  f"red-wine:{test_fold}")
