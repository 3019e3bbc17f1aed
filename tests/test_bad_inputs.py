"""Bad input ends as one line naming the file or flag, exit 2, and nothing lost: flags out of range,
data files of the wrong kind, contexts of the wrong shape, NaN in data, a folder two runs want,
updates that go non-finite, absurd sizes refused before anything is allocated."""
from __future__ import annotations

import csv
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

import arspec
from arspec.cli.main import main
from arspec.data import load_data
from arspec.data.splits import DataError
from arspec.train import TrainConfig, TrainingError, train
from arspec.train.lock import FolderInUse, RunLock
from tests.helpers import problems_of, spec_from
from tests.test_parallel_wavenet import TINY_STUDENT

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["--set", "params.hidden=12", "--data", "binarized-mnist-5k", "--limit", "64", "--batch-size", "32", "--quiet"]
WAVE = """\
name: tiny_conditional_wavenet
event: {shape: [32]}
distribution: {type: categorical, classes: 8}
conditioning:
  speaker: {type: global, classes: 3}
  mel: {type: local, channels: 2, upsample: 4}
graph:
  embed: {op: embedding, inputs: [x], channels: 4, shift: 1}
  h: {op: causal_conv1d, channels: 4, kernel: 2, activation: tanh, condition: [speaker, mel]}
  out: {op: conv1x1, channels: output}
"""


def cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as stop:                                     # argument errors leave through argparse
        code = int(stop.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(code: int, err: str, *words: str) -> None:
    assert code == 2, err
    assert err.count("\n") == 1 and "internal error" not in err and "Traceback" not in err, err
    for word in words:
        assert word in err, err


# -- flags ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flags, says", [
    (["--epochs", "-2"], "argument --epochs: must be at least 1, got -2"),
    (["--epochs", "0"], "argument --epochs: must be at least 1, got 0"),
    (["--lr", "-1"], "--lr: must be > 0.0, got -1.0"),
    (["--lr", "50"], "--lr: must be <= 10.0, got 50.0"),
    (["--weight-decay", "-0.5"], "--weight-decay: must be >= 0.0, got -0.5"),
])
def test_training_flags_out_of_range_name_the_flag(tmp_path, capsys, flags, says):
    code, _, err = cli(capsys, "train", "specs/made.yaml", *flags, "--out", str(tmp_path))
    one_line_error(code, err, says)
    assert not (tmp_path / "last.safetensors").exists()


# -- data files -------------------------------------------------------------------------------------

@pytest.mark.parametrize("arrays, says", [
    ({"x": np.array(["a", "b"] * 20)}, "array 'x' holds <U1 values; expected numbers"),
    ({"x": np.ones((40, 1, 3, 3), dtype=np.complex64)}, "array 'x' holds complex64 values"),
    ({"x": np.array(7)}, "array 'x' is a single value"),
    ({"x": np.full((40, 1, 3, 3), 2 ** 63 + 5, dtype=np.uint64)}, "array 'x' holds integers above"),
    ({"x": np.where(np.eye(9)[:1].reshape(1, 1, 3, 3) > 0, np.nan, 0.5).repeat(40, 0)}, "NaN or infinite value(s) (the first in row 0)"),
])
def test_npz_arrays_that_are_not_plain_numbers_are_data_errors(tmp_path, capsys, arrays, says):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    code, _, err = cli(capsys, "train", "specs/made.yaml", "--set", "event.shape=[1,3,3]", "--data", str(path), "--out", str(tmp_path / "o"))
    one_line_error(code, err, "data error", str(path), says)


def test_a_file_that_is_not_a_zip_is_a_data_error(tmp_path, capsys):
    path = tmp_path / "data.npz"
    path.write_bytes(b"PK\x03\x04 not really a zip archive")
    code, _, err = cli(capsys, "train", "specs/made.yaml", "--data", str(path), "--out", str(tmp_path / "o"))
    one_line_error(code, err, "data error", "not a readable .npz")


def test_nan_in_a_training_context_is_refused_before_training(tmp_path):
    spec = spec_from(WAVE)
    rng = np.random.default_rng(0)
    mel = rng.normal(size=(40, 2, 8)).astype(np.float32)
    mel[3, 1, 5] = np.inf
    path = tmp_path / "wave.npz"
    np.savez(path, x=rng.integers(0, 8, (40, 32)), speaker=rng.integers(0, 3, 40), mel=mel)
    with pytest.raises(DataError, match=r"array 'mel' holds 1 NaN or infinite value\(s\) \(the first in row 3\)"):
        load_data(spec, str(path))


# -- sampling contexts ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def wave_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("wave")
    rng = np.random.default_rng(0)
    np.savez(folder / "wave.npz", x=rng.integers(0, 8, (40, 32)), speaker=rng.integers(0, 3, 40),
             mel=rng.normal(size=(40, 2, 8)).astype(np.float32))
    (folder / "wave.yaml").write_text(WAVE)
    assert main(["train", str(folder / "wave.yaml"), "--data", str(folder / "wave.npz"), "--steps", "1", "--batch-size", "8",
                 "--out", str(folder / "run"), "--quiet"]) == 0
    return folder


@pytest.mark.parametrize("mel, speaker, n, says", [
    (np.zeros((2, 8)), 1, 2, None),                                  # one item of the context's shape: for every sample
    (np.zeros((1, 2, 8)), [0, 2], 2, None),
    (np.zeros((2, 2, 8)), 1, 2, None),                               # its first axis equals the channels: still one per sample
    (np.zeros((2, 7)), 1, 2, "context 'mel' needs items of shape [2, 8]"),
    (np.zeros((3, 2, 8)), 1, 2, "context 'mel' has 3 rows for 2 samples"),
    (np.zeros((2, 8)), [0, 1, 2], 2, "context 'speaker' has 3 values for 2 samples"),
    (np.full((2, 8), np.nan), 1, 2, "NaN or infinite"),
])
def test_sampling_contexts_are_checked_against_the_model(wave_run, tmp_path, capsys, mel, speaker, n, says):
    path = tmp_path / "context.npz"
    np.savez(path, mel=mel, speaker=np.asarray(speaker))
    code, out, err = cli(capsys, "sample", str(wave_run / "run"), "-n", str(n), "--context-file", str(path), "-o", str(tmp_path / "s.npy"))
    if says is None:
        assert code == 0, err
        assert np.load(tmp_path / "s.npy").shape == (n, 32)
    else:
        one_line_error(code, err, says)


def test_sampling_more_than_memory_holds_is_refused_at_once(wave_run, tmp_path, capsys):
    code, _, err = cli(capsys, "sample", str(wave_run / "run"), "-n", "100000000000", "--context", "speaker=1", "-o", str(tmp_path / "s.npy"))
    one_line_error(code, err, "-n 100,000,000,000", "of memory available here")
    code, _, err = cli(capsys, "sample", "runs/none", "-n", "20000", "-o", str(tmp_path / "s.png"))
    assert code == 2


def test_many_samples_are_drawn_in_batches(tmp_path, capsys):
    run = tmp_path / "made"
    assert main(["train", "specs/made.yaml", *SMALL, "--steps", "1", "--set", "event.shape=[1,8,8]", "--data", "digits-binary",
                 "--out", str(run)]) == 0
    capsys.readouterr()
    code, _, err = cli(capsys, "sample", str(run), "-n", "10", "--batch-size", "4", "-o", str(tmp_path / "s.npy"))
    assert code == 0, err
    assert np.load(tmp_path / "s.npy").shape == (10, 1, 8, 8)


# -- one run per folder, nothing replaced unasked -------------------------------------------------

def test_a_second_run_into_the_same_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    with RunLock(out):
        with pytest.raises(FolderInUse, match="in use by another training run"), RunLock(out):
            pass
        result = subprocess.run([sys.executable, "-m", "arspec", "train", "specs/made.yaml", *SMALL, "--steps", "1", "--out", str(out)],
                                capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 2 and "is in use by another training run (process" in result.stderr, result.stderr
    assert not (out / "last.safetensors").exists()


def test_a_new_run_does_not_replace_a_previous_one_unless_asked(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "specs/made.yaml", *SMALL, "--steps", "1", "--out", str(out)]) == 0
    before = (out / "last.safetensors").read_bytes()
    code, _, err = cli(capsys, "train", "specs/made.yaml", *SMALL, "--steps", "1", "--out", str(out))
    one_line_error(code, err, "holds a previous run", "--resume", "--overwrite")
    assert (out / "last.safetensors").read_bytes() == before
    assert main(["train", "specs/made.yaml", *SMALL, "--steps", "1", "--seed", "3", "--out", str(out), "--overwrite"]) == 0
    assert (out / "last.safetensors").read_bytes() != before
    code, _, err = cli(capsys, "train", "specs/made.yaml", *SMALL, "--resume", "--out", str(tmp_path / "empty"))
    one_line_error(code, err, "nothing to resume")


def test_rows_written_after_the_last_checkpoint_are_not_repeated_on_resume(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "specs/made.yaml", *SMALL, "--steps", "2", "--out", str(out)]) == 0
    with open(out / "loss.csv", "a", newline="") as f:        # rows of steps whose checkpoint never reached the disk
        f.write("3,1,500.0,0.005,,\n4,1,500.0,0.005,,\n")
    assert main(["train", "specs/made.yaml", *SMALL, "--steps", "4", "--resume", "--out", str(out)]) == 0
    steps = [int(r["step"]) for r in csv.DictReader(open(out / "loss.csv"))]
    assert steps == [1, 2, 3, 4]


# -- non-finite updates ---------------------------------------------------------------------------

def _made(out: Path, **flags):
    spec = arspec.load_spec(ROOT / "specs" / "made.yaml", overrides=["params.hidden=12"])
    data = load_data(spec, "binarized-mnist-5k")
    data.train = data.train[:64]
    return spec, data, TrainConfig.from_spec(spec, out, batch_size=32, quiet=True, **flags)


def test_weights_that_become_non_finite_never_replace_the_last_good_checkpoint(tmp_path, monkeypatch):
    from arspec.train.trainer import _Run
    spec, data, config = _made(tmp_path, epochs=1)
    train(spec, data, config)                                       # epoch 1: a good last checkpoint (step 2)
    good = (tmp_path / "last.safetensors").read_bytes()
    original = _Run.step

    def poisoned(self, items):
        value = original(self, items)
        with torch.no_grad():
            next(self.model.parameters()).fill_(float("inf"))      # an update that overflowed
        return value
    monkeypatch.setattr(_Run, "step", poisoned)
    spec, data, config = _made(tmp_path, epochs=2, resume=True)
    with pytest.raises(TrainingError) as caught:
        train(spec, data, config)
    message = str(caught.value)
    assert (tmp_path / "last.safetensors").read_bytes() == good
    assert "last.safetensors (unchanged)" in message and "diverged.safetensors" in message and "best.safetensors" in message
    from arspec.checkpoint import CheckpointError
    with pytest.raises(CheckpointError, match="weights are not finite"):
        arspec.load_model(tmp_path / "diverged.safetensors")
    assert all(torch.isfinite(p).all() for p in arspec.load_model(tmp_path).parameters())


def test_a_non_finite_gradient_stops_before_the_update_and_the_run_resumes(tmp_path, monkeypatch):
    spec, data, config = _made(tmp_path, epochs=1)
    calls = {"n": 0}
    clip = torch.nn.utils.clip_grad_norm_

    def overflowing(params, max_norm):
        calls["n"] += 1
        norm = clip(params, max_norm)
        return torch.full_like(norm, float("inf")) if calls["n"] == 2 else norm    # the second step's gradient overflows
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", overflowing)
    with pytest.raises(TrainingError, match="the gradient became inf at step 2; the weights before that update are saved"):
        train(spec, data, config)
    monkeypatch.undo()
    assert all(torch.isfinite(p).all() for p in arspec.load_model(tmp_path / "last.safetensors").parameters())
    spec, data, config = _made(tmp_path, epochs=1, resume=True)
    assert train(spec, data, config)["steps"] == 2


# -- spec inputs ------------------------------------------------------------------------------------

def test_deeply_nested_yaml_is_a_located_error(tmp_path, capsys):
    path = tmp_path / "deep.yaml"
    path.write_text("name: t\nparams: {deep: " + "[" * 5000 + "]" * 5000 + "}\n")
    code, out, _ = cli(capsys, "check", str(path))
    assert code == 2 and "deeper than the limit of 64 levels" in out
    assert any("deeper than the limit" in p for p in problems_of("name: t\nparams: {deep: " + "[" * 100 + "]" * 100 + "}\n"))


def test_an_absurd_event_is_refused_before_anything_is_allocated():
    tracemalloc.start()
    problems = problems_of("name: big\nevent: {shape: [1, 7000, 7000]}\ndistribution: {type: bernoulli}\n"
                           "graph:\n  out: {op: masked_conv2d, inputs: [x], channels: output, kernel: 3, mask: A}\n")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert any("an event of 49,000,000 elements is larger than the limit" in p for p in problems)
    assert peak < 50 * 2 ** 20


def test_an_op_whose_code_raises_is_named_with_its_node():
    from arspec.ops import registry
    ops = registry.ops()
    original = ops["relu"]

    class Faulty(type(original)):                                   # as a plugin's op with a bug would
        def infer(self, spec, inputs, ctx):
            raise KeyError("channels")
    ops["relu"] = Faulty()
    try:
        problems = problems_of("name: t\nevent: {shape: [1, 2, 2]}\ndistribution: {type: bernoulli}\ngraph:\n"
                               "  h: {op: masked_conv2d, inputs: [x], channels: 2, kernel: 3, mask: A}\n  act: {op: relu}\n"
                               "  out: {op: masked_conv2d, channels: output, kernel: 1, mask: B}\n")
    finally:
        ops["relu"] = original
    assert any("graph.act: op 'relu'" in p and "failed in its shape rule on node 'act': KeyError" in p for p in problems), problems


# -- the API where it used to fail ------------------------------------------------------------------

def test_dynamic_check_of_a_student_of_flows(tmp_path, capsys):
    path = tmp_path / "student.yaml"
    path.write_text(TINY_STUDENT.replace("\n    ", "\n").strip() + "\n")
    code, out, err = cli(capsys, "check", "--dynamic", str(path))
    assert code == 0, out + err
    assert "internal error" not in err


def test_an_order_agnostic_sequence_model_takes_forward_without_observed():
    model = arspec.compile(arspec.load_spec(ROOT / "specs" / "deep_rnade.yaml"), seed=0).eval()
    x, _ = model.example_inputs(3, generator=torch.Generator().manual_seed(0))
    assert model(x).shape[:2] == (3, 11)
    assert torch.equal(model(x), model(x, observed=torch.zeros(1, 11)))
    with pytest.raises(ValueError, match=r"observed= must have shape \(B or 1, \*event_shape\)"):
        model(x, observed=torch.zeros(3, 1, 11))


def test_log_prob_given_z_agrees_with_log_prob_elements_for_a_decoder_reading_the_encoder():
    spec = arspec.load_spec(ROOT / "specs" / "broken" / "pixelvae_decoder_reads_encoder.yaml")
    model = arspec.compile(spec, seed=0).eval()
    x, _ = model.example_inputs(2, generator=torch.Generator().manual_seed(0))
    z = torch.randn(2, *model.latent_shape, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(model.log_prob(x, z=z), model.log_prob_elements(x, z=z).flatten(1).sum(1))


def test_a_residual_joining_an_unshifted_embedding_is_blamed_on_the_residual():
    text = """\
name: raw_residual
event: {shape: [16]}
distribution: {type: categorical, classes: 4}
graph:
  raw:   {op: embedding, inputs: [x], channels: 4}
  embed: {op: shift, inputs: [raw], by: [1]}
  h:     {op: causal_conv1d, inputs: [embed], channels: 4, kernel: 2, activation: tanh}
  mix:   {op: conv1x1, inputs: [h], channels: 4, residual: raw}
  out:   {op: conv1x1, channels: output}
"""
    report = arspec.analyze(spec_from(text))
    [error] = report.errors
    assert error.path == "graph.mix" and error.location.line == 8 and "through its residual 'raw'" in error.message
    assert "read 'embed' here instead" in error.message and "give it shift: 1" not in error.message


def test_order_agnostic_likelihoods_stack_no_more_rows_than_the_memory_budget_holds(monkeypatch):
    """The exact likelihood stacks a pass per step; the rows of one call fit `memory_budget`
    (float64 included), and the value does not depend on how they are split."""
    model = arspec.compile(arspec.load_spec(ROOT / "specs" / "deep_nade.yaml", overrides=["event.shape=[1,4,4]"]), seed=0).double().eval()
    x, _ = model.example_inputs(3, generator=torch.Generator().manual_seed(0))
    whole = model.log_prob(x)
    seen = []
    forward = type(model).forward

    def counting(self, xs, observed=None, **context):
        seen.append(xs.shape[0])
        return forward(self, xs, observed=observed, **context)
    monkeypatch.setattr(type(model), "forward", counting)
    model.memory_budget = 7 * model.row_bytes()
    assert torch.allclose(model.log_prob(x), whole, rtol=1e-12)
    assert max(seen) <= 7 and model.rows_within() == 7
