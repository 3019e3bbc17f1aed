"""Train, evaluate and sample end to end on the bundled data; checkpoints are safe; torchrun works."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from arspec_torch.armodel import ARModel
from safetensors import safe_open

import arspec
from arspec.checkpoint import save_checkpoint
from arspec.data import DataError, load_data
from arspec.dynamic import generic_parameters
from arspec.train import TrainConfig, TrainingError, train

ROOT = Path(__file__).resolve().parent.parent
SMALL_MADE = ["--set", "params.hidden=64", "--data", "binarized-mnist-5k"]   # 500 validation and test digits


def cli(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "arspec", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, timeout=900)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("made")
    result = cli("train", "specs/made.yaml", "--epochs", "1", "--out", str(out), "--limit", "800", "--quiet", *SMALL_MADE)
    assert result.returncode == 0, result.stderr
    assert "test NLL of the best checkpoint" in result.stdout and "nats" in result.stdout
    return out


def test_train_writes_safetensors_checkpoints_and_a_loss_curve(trained):
    for name in ("best.safetensors", "last.safetensors", "loss.csv", "loss.png"):
        assert (trained / name).exists(), name
    with safe_open(str(trained / "last.safetensors"), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == "arspec-checkpoint-2" and "masked_linear" in meta["spec"] and len(meta["digest"]) == 64
    assert not list(trained.glob("*.tmp"))


def test_eval_reports_nats_and_bits_per_dim(trained):
    result = cli("eval", str(trained))
    assert result.returncode == 0, result.stderr
    assert "nats per item" in result.stdout and "bits/dim" in result.stdout


def test_sample_writes_png_grids(trained, tmp_path):
    out = tmp_path / "s.png"
    result = cli("sample", str(trained), "-n", "4", "-o", str(out))
    assert result.returncode == 0, result.stderr
    for name in ("s.png", "s_nll.png", "s_probs.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_a_checkpoint_rebuilds_the_model_without_pickle(trained):
    model = arspec.load_model(trained / "best.safetensors")
    x = torch.randint(0, 2, (2, 1, 28, 28))
    assert torch.isfinite(model.log_prob(x)).all()
    assert model.spec.name == "made"


@pytest.mark.parametrize("name,overrides", [
    ("made.yaml", ["params.hidden=16", "event.shape=[1,4,4]"]),
    ("gated_pixelcnn_conditional.yaml", ["event.shape=[1,5,5]", "params.channels=4", "params.double=8"]),
    ("wavenet_conditional.yaml", ["event.shape=[32]", "conditioning.features.upsample=8", "params.residual=4", "params.gate=8", "params.skip=8"]),
])
def test_a_saved_model_loads_back_with_identical_log_probs(tmp_path, name, overrides):
    spec = arspec.load_spec(ROOT / "specs" / name, overrides=overrides)
    model = arspec.compile(spec, seed=0).eval()
    generic_parameters(model, 3, spec.ir)                  # not the initial weights: biases too
    x, context = model.example_inputs(4, torch.Generator().manual_seed(0))
    path = save_checkpoint(tmp_path / "m.safetensors", model, spec.ir.source, {"kind": "test"})
    loaded = arspec.load_model(path).eval()
    with torch.no_grad():
        assert torch.equal(model.log_prob(x, **context), loaded.log_prob(x, **context))
    assert loaded.spec.overrides == overrides


def test_resume_continues_from_the_last_checkpoint_with_its_schedule(trained, tmp_path):
    out = tmp_path / "resumed"
    shutil.copytree(trained, out)
    steps_before = json.loads(_meta(out / "last.safetensors")["meta"])["state"]["step"]
    assert json.loads(_meta(out / "last.safetensors")["scheduler"])["last_epoch"] == steps_before
    result = cli("train", "specs/made.yaml", "--epochs", "2", "--out", str(out), "--limit", "800", "--resume", "--quiet", *SMALL_MADE)
    assert result.returncode == 0, result.stderr
    meta = _meta(out / "last.safetensors")
    steps_after = json.loads(meta["meta"])["state"]["step"]
    assert steps_after == 2 * steps_before
    assert json.loads(meta["scheduler"])["last_epoch"] == steps_after


def _meta(path: Path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


def test_a_nan_loss_stops_with_a_clear_message_and_a_good_checkpoint(tmp_path):
    spec = arspec.load_spec(ROOT / "specs" / "made.yaml", overrides=["params.hidden=16"])
    data = load_data(spec)
    data.train = data.train[:64]
    config = TrainConfig.from_spec(spec, tmp_path, epochs=1, batch_size=16, quiet=True)
    original = ARModel.training_loss

    def poisoned(self, x, **context):
        return original(self, x, **context) * float("nan")
    ARModel.training_loss = poisoned
    try:
        with pytest.raises(TrainingError, match="the loss became nan at step 1; the weights before that update are saved as the last state"):
            train(spec, data, config)
    finally:
        ARModel.training_loss = original
    model = arspec.load_model(tmp_path / "last.safetensors")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_data_that_does_not_fit_the_spec_is_rejected_before_training(tmp_path):
    spec = arspec.load_spec(ROOT / "specs" / "made.yaml", overrides=["event.shape=[1,8,8]"])
    with pytest.raises(DataError, match="items have shape \\[1, 28, 28\\], the spec's event is \\[1, 8, 8\\]"):
        load_data(spec, "binarized-mnist")
    spec = arspec.load_spec(ROOT / "specs" / "made.yaml")
    with pytest.raises(DataError, match="values must lie in \\[0, 1\\], got \\[0, 255\\]"):
        load_data(spec, "mnist")
    result = cli("train", "specs/made.yaml", "--data", "mnist", "--out", str(tmp_path))
    assert result.returncode == 2 and "data error" in result.stderr and "Traceback" not in result.stderr


def test_binarized_mnist_is_the_standard_fixed_binarization():
    spec = arspec.load_spec(ROOT / "specs" / "made.yaml")
    data = load_data(spec)
    assert data.name == "binarized-mnist"
    assert (len(data.train), len(data.validation), len(data.test)) == (50000, 10000, 10000)
    assert 0.1 < float(data.train[:5000].float().mean()) < 0.16     # MNIST strokes cover about an eighth of the image


def test_the_5000_digit_subset_keeps_a_fixed_split_and_labels():
    spec = arspec.load_spec(ROOT / "specs" / "made.yaml")
    a, b = load_data(spec, "binarized-mnist-5k"), load_data(spec, "binarized-mnist-5k")
    assert torch.equal(a.train, b.train)
    assert (len(a.train), len(a.validation), len(a.test)) == (4000, 500, 500)
    assert set(a.contexts["train"]["label"].unique().tolist()) == set(range(10))


@pytest.mark.slow          # make test-all: trains and samples a conditional Gated PixelCNN through the command line
def test_class_conditional_training_feeds_labels(tmp_path):
    result = cli("train", "specs/gated_pixelcnn_conditional.yaml", "--steps", "2", "--batch-size", "8", "--out", str(tmp_path),
                 "--limit", "64", "--quiet", "--set", "params.channels=4", "--set", "params.double=8")
    assert result.returncode == 0, result.stderr
    sample = cli("sample", str(tmp_path), "-n", "2", "--label", "3", "-o", str(tmp_path / "three.png"))
    assert sample.returncode == 0, sample.stderr


def test_torchrun_with_two_processes_takes_the_same_steps_as_one_process(tmp_path):
    """Two processes with half batches and averaged gradients must reach the parameters one process
    reaches on the whole batches (the same items per step: no shuffling); a missing all-reduce
    would leave each process on its own half."""
    torchrun = Path(sys.executable).with_name("torchrun")
    args = ["-m", "arspec", "train", "specs/made.yaml", "--steps", "4", "--limit", "256", "--no-shuffle", "--quiet", "--data", "binarized-mnist-5k",
            "--set", "params.hidden=32", "--set", "training.grad_clip=null"]
    two = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=2", *args, "--batch-size", "32", "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert two.returncode == 0, two.stderr[-2000:]
    one = cli(*args[2:], "--out", str(tmp_path / "one"), "--batch-size", "64")
    assert one.returncode == 0, one.stderr
    assert not (tmp_path / "two" / "rank1").exists()
    m1, m2 = arspec.load_model(tmp_path / "one" / "last.safetensors"), arspec.load_model(tmp_path / "two" / "last.safetensors")
    p1, p2 = dict(m1.named_parameters()), dict(m2.named_parameters())
    initial = dict(arspec.compile(m1.spec, seed=0).named_parameters())
    for name in p1:
        assert not torch.equal(p1[name], initial[name]), name          # training moved every parameter
        assert torch.allclose(p1[name], p2[name], atol=1e-5, rtol=1e-4), name


@pytest.mark.slow
def test_training_with_torch_compile_takes_the_same_steps(tmp_path):
    spec = arspec.load_spec(ROOT / "specs" / "made.yaml", overrides=["params.hidden=16"])
    data = load_data(spec, "binarized-mnist-5k")
    results = {}
    for flag in (False, True):
        config = TrainConfig.from_spec(spec, tmp_path / str(flag), steps=3, batch_size=16, quiet=True, compile=flag, shuffle=False)
        train(spec, data, config)
        results[flag] = arspec.load_model(tmp_path / str(flag) / "last.safetensors")
    x = data.test[:8]
    assert torch.allclose(results[True].log_prob(x), results[False].log_prob(x), atol=1e-3)
