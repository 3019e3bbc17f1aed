"""`--log tensorboard` writes what TensorBoard users look for: per-step training NLL and learning
rate, the validation NLL in nats and bits/dim at every validation, and a sample grid from the
validated weights; a resumed run's curves continue without doubling back; a missing package is
named before training starts."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

import arspec
from arspec.data import load_data
from arspec.errors import UsageError
from arspec.train import TrainConfig, train
from arspec.train.tensorboard import require_tensorboard

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FLAGS = {"batch_size": 16, "quiet": True, "shuffle": False, "log": "tensorboard", "log_samples": 4}


def _small_made():
    spec = arspec.load_spec(ROOT / "specs" / "made.yaml", overrides=["params.hidden=16"])
    data = load_data(spec, "binarized-mnist-5k")
    data.train, data.validation = data.train[:64], data.validation[:32]
    return spec, data


def _events(out: Path) -> EventAccumulator:
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    return events


def test_the_log_holds_training_and_validation_curves_and_sample_grids(tmp_path):
    spec, data = _small_made()
    train(spec, data, TrainConfig.from_spec(spec, tmp_path, epochs=2, **FLAGS))
    events = _events(tmp_path)
    assert [e.step for e in events.Scalars("train/nats")] == list(range(1, 9))
    assert {"train/lr", "train/bits_per_dim", "validation/bits_per_dim"} <= set(events.Tags()["scalars"])
    with open(tmp_path / "epochs.csv") as f:
        validations = [(int(row["step"]), float(row["validation_nats"])) for row in csv.DictReader(f)]
    logged = [(e.step, e.value) for e in events.Scalars("validation/nats")]
    assert [s for s, _ in logged] == [s for s, _ in validations] == [4, 8]
    assert all(abs(a - b) < 1e-3 for (_, a), (_, b) in zip(logged, validations))
    grids = events.Images("samples")
    assert [g.step for g in grids] == [4, 8]
    assert grids[0].width >= 2 * 2 * 28 and grids[0].height >= 2 * 2 * 28       # 4 digits, two by two, upscaled


def test_a_resumed_run_purges_what_was_logged_past_its_checkpoint(tmp_path):
    spec, data = _small_made()
    train(spec, data, TrainConfig.from_spec(spec, tmp_path, epochs=1, **FLAGS))
    stray = SummaryWriter(str(tmp_path / "tensorboard"))          # a crashed run logged steps it never checkpointed
    for step in (5, 6, 7):
        stray.add_scalar("train/nats", 1e6, step)
    stray.close()
    train(spec, data, TrainConfig.from_spec(spec, tmp_path, epochs=2, resume=True, **FLAGS))
    steps = [(e.step, e.value) for e in _events(tmp_path).Scalars("train/nats")]
    assert [s for s, _ in steps] == list(range(1, 9))
    assert all(value < 1e5 for _, value in steps)


def test_a_fresh_run_over_an_old_one_starts_a_fresh_log(tmp_path):
    spec, data = _small_made()
    train(spec, data, TrainConfig.from_spec(spec, tmp_path, epochs=2, **FLAGS))
    train(spec, data, TrainConfig.from_spec(spec, tmp_path, epochs=1, overwrite=True, **FLAGS))
    assert [e.step for e in _events(tmp_path).Scalars("train/nats")] == list(range(1, 5))


def test_a_missing_tensorboard_is_named_with_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(UsageError, match=r"--log tensorboard: .*pip install 'arspec\[tensorboard\]'"):
        require_tensorboard()
