"""`training.ema`: a warmed-up moving average of the weights, validated and saved, and continued
by a resumed run."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torch import nn

import arspec
from arspec.data import load_data
from arspec.train import TrainConfig, train
from arspec.train.averaging import WeightAverage, warmed_decay

ROOT = Path(__file__).resolve().parent.parent


def test_the_decay_warms_up_to_the_asked_one():
    assert warmed_decay(0.999, 0) == pytest.approx(0.1)
    assert warmed_decay(0.999, 90) == pytest.approx(0.91)
    assert warmed_decay(0.999, 10**6) == 0.999
    assert warmed_decay(0.5, 20) == 0.5


def test_the_average_is_the_warmed_recurrence_over_the_weights_it_saw():
    model = nn.Linear(3, 2)
    average = WeightAverage(model, 0.9)
    expected = [p.detach().clone() for p in model.parameters()]
    for n in range(30):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        average.update(model, n)
        d = warmed_decay(0.9, n)
        expected = [d * e + (1 - d) * p.detach() for e, p in zip(expected, model.parameters())]
    for a, e in zip(average.module.parameters(), expected):
        assert torch.allclose(a, e, atol=1e-6)
        assert not a.requires_grad


def test_without_warm_up_the_average_would_stay_near_the_start():
    """The mutation the warm-up exists for: a fixed decay of 0.999 over 20 updates keeps 98% of
    the initial weights, so the average is told apart from the warmed one."""
    model = nn.Linear(4, 4)
    start = [p.detach().clone() for p in model.parameters()]
    average = WeightAverage(model, 0.999)
    fixed = [p.clone() for p in start]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    for n in range(20):
        average.update(model, n)
        fixed = [0.999 * f + 0.001 * p.detach() for f, p in zip(fixed, model.parameters())]
    warmed_shift = min(float((a - s).mean()) for a, s in zip(average.module.parameters(), start))
    fixed_shift = max(float((f - s).mean()) for f, s in zip(fixed, start))
    assert warmed_shift > 0.5 and fixed_shift < 0.05


def _ema_tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys() if k.startswith("ema.")}


def test_a_resumed_run_continues_the_same_average(tmp_path):
    spec = arspec.load_spec(ROOT / "specs" / "made.yaml", overrides=["params.hidden=16"])
    data = load_data(spec, "binarized-mnist-5k")
    data.train = data.train[:96]
    flags = {"batch_size": 16, "quiet": True, "shuffle": False, "ema": 0.99, "validate_every": 100}
    train(spec, data, TrainConfig.from_spec(spec, tmp_path / "whole", steps=6, **flags))
    train(spec, data, TrainConfig.from_spec(spec, tmp_path / "halves", steps=3, **flags))
    train(spec, data, TrainConfig.from_spec(spec, tmp_path / "halves", steps=6, resume=True, **flags))
    whole, halves = _ema_tensors(tmp_path / "whole" / "last.safetensors"), _ema_tensors(tmp_path / "halves" / "last.safetensors")
    assert whole and whole.keys() == halves.keys()
    for k in whole:
        assert torch.allclose(whole[k], halves[k], atol=1e-6), k
