"""A researcher's day, as the README promises it: their own conditional data, outputs in the format
asked for, damaged files handled, every bad argument one located line, and training that resumes
exactly where it stopped."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import arspec
from arspec.checkpoint import digest
from arspec.data.files import from_arrays
from arspec.train import TrainConfig, train

ROOT = Path(__file__).resolve().parent.parent
VOCAB = ["a", "b", "c", " "]
GENRE_TEXT = """\
name: genre_text
event: {shape: [16]}
distribution: {type: categorical, classes: 4}
conditioning:
  genre: {type: global, classes: 3}
graph:
  embed: {op: embedding, inputs: [x], channels: 8, shift: 1}
  c1:    {op: causal_conv1d, inputs: [embed], channels: 16, kernel: 2, dilation: 1, activation: gated, condition: [genre]}
  c2:    {op: causal_conv1d, inputs: [c1], channels: 16, kernel: 2, dilation: 2, activation: gated, condition: [genre]}
  out:   {op: conv1x1, inputs: [c2], channels: output}
training: {lr: 0.02, batch_size: 32, epochs: 1}
"""


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "arspec", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ}, timeout=600)


def genre_arrays(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Sequences whose tokens are mostly the genre's own token (genre g writes token g)."""
    rng = np.random.default_rng(seed)
    genre = rng.integers(0, 3, size=n)
    noise = rng.integers(0, 4, size=(n, 16))
    x = np.where(rng.random((n, 16)) < 0.85, genre[:, None], noise)
    return {"x": x.astype(np.int64), "genre": genre.astype(np.int64), "vocab": np.array(VOCAB)}


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    parts = from_arrays(arrays, "genre")
    out = {"train": parts.train.numpy(), "validation": parts.validation.numpy(), "test": parts.test.numpy(), "vocab": np.array(VOCAB)}
    for split in ("train", "validation", "test"):
        for name, value in parts.contexts[split].items():
            out[f"{split}_{name}"] = value.numpy()
    np.savez(path, **out)
    return path


@pytest.fixture(scope="module")
def genre_run(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A genre-conditioned text model trained from a user's .npz through the CLI."""
    folder = tmp_path_factory.mktemp("genre")
    spec = folder / "genre_text.yaml"
    spec.write_text(GENRE_TEXT)
    data = write_npz(folder / "genre.npz", genre_arrays(1200))
    result = cli("train", str(spec), "--data", str(data), "--steps", "90", "--out", str(folder / "run"), "--quiet")
    assert result.returncode == 0, result.stderr
    return spec, data, folder / "run"


def test_context_arrays_in_a_users_npz_reach_the_model(genre_run):
    spec, data, run = genre_run
    result = cli("eval", str(run), "--data", str(data))
    assert result.returncode == 0, result.stderr
    assert "nats per item" in result.stdout and "best.safetensors" in result.stdout
    model = arspec.load_model(run)
    x = torch.full((1, 16), 2)
    with torch.no_grad():
        by_genre = [float(model.log_prob(x, genre=torch.tensor([g]))) for g in range(3)]
    assert int(np.argmax(by_genre)) == 2, by_genre    # a run of token 2 is most likely for genre 2


def test_text_samples_are_decoded_with_the_datas_vocabulary(genre_run, tmp_path):
    _, _, run = genre_run
    out = tmp_path / "lines.txt"
    result = cli("sample", str(run), "-n", "8", "--context", "genre=2", "--temperature", "0.5", "-o", str(out))
    assert result.returncode == 0, result.stderr
    lines = out.read_text().splitlines()
    assert len(lines) == 8 and all(len(line) == 16 and set(line) <= set(VOCAB) for line in lines)
    assert "".join(lines).count("c") > 0.6 * 8 * 16          # genre 2 writes token 2, 'c'


def test_samples_follow_the_extension_and_refuse_formats_the_event_cannot_take(genre_run, tmp_path):
    _, _, run = genre_run
    result = cli("sample", str(run), "-n", "3", "--context", "genre=1", "-o", str(tmp_path / "raw.npy"))
    assert result.returncode == 0, result.stderr
    raw = np.load(tmp_path / "raw.npy")
    assert raw.shape == (3, 16) and raw.min() >= 0 and raw.max() < 4
    for name, needs in [("pic.png", "image event"), ("sound.wav", "audio event")]:
        refused = cli("sample", str(run), "-n", "2", "--context", "genre=1", "-o", str(tmp_path / name))
        assert refused.returncode == 2 and needs in refused.stderr and "(use .npy" in refused.stderr
        assert "Traceback" not in refused.stderr and "[1, 16]" not in refused.stderr
        assert not (tmp_path / name).exists()


def test_contexts_come_from_files_for_eval_and_sample(genre_run, tmp_path):
    _, data, run = genre_run
    per_sample = tmp_path / "genres.npz"
    np.savez(per_sample, genre=np.array([0, 1, 2]))
    result = cli("sample", str(run), "-n", "3", "--context-file", str(per_sample), "--temperature", "0.3", "-o", str(tmp_path / "s.npy"))
    assert result.returncode == 0, result.stderr
    samples = np.load(tmp_path / "s.npy")
    assert [int(np.bincount(row, minlength=4).argmax()) for row in samples] == [0, 1, 2]
    with np.load(data) as f:
        items = f["test"]
    np.save(tmp_path / "x.npy", items)
    folder = tmp_path / "held_out"
    folder.mkdir()
    for split in ("train", "validation", "test"):
        np.save(folder / f"{split}.npy", items)
    result = cli("eval", str(run), "--data", str(folder), "--context", "genre=0")
    assert result.returncode == 0, result.stderr and "nats per item" in result.stdout


@pytest.mark.parametrize("damage, message", [
    ("drop the test contexts", "no context 'genre' for the test split"),
    ("classes out of range", "holds classes 5..7; the conditioning has 3 classes (0..2)"),
    ("too few rows", "context validation_genre has 3 rows for"),
])
def test_context_arrays_are_checked_against_the_spec_before_training(tmp_path, damage, message):
    (tmp_path / "spec.yaml").write_text(GENRE_TEXT)
    arrays = dict(np.load(write_npz(tmp_path / "ok.npz", genre_arrays(200))))
    if damage == "drop the test contexts":
        del arrays["test_genre"]
    elif damage == "classes out of range":
        arrays["train_genre"] = arrays["train_genre"] + 5
    else:
        arrays["validation_genre"] = arrays["validation_genre"][:3]
    np.savez(tmp_path / "bad.npz", **arrays)
    result = cli("train", str(tmp_path / "spec.yaml"), "--data", str(tmp_path / "bad.npz"), "--out", str(tmp_path / "run"))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "data error:" in result.stderr and message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "last.safetensors").exists()


def test_local_context_arrays_must_match_the_event_after_upsampling():
    spec = arspec.load_spec(ROOT / "specs" / "wavenet_conditional.yaml", overrides=["event.shape=[320]"])
    n = 4
    arrays = {"x": np.zeros((n * 10, 320), dtype=np.int64), "speaker": np.zeros(n * 10, dtype=np.int64),
              "features": np.zeros((n * 10, 20, 3), dtype=np.float32)}
    problems = from_arrays(arrays, "local").context_problems(spec)
    assert any("needs [20, 2]" in p and "upsample 160" in p for p in problems), problems
    arrays["features"] = np.zeros((n * 10, 20, 2), dtype=np.float32)
    assert from_arrays(arrays, "local").context_problems(spec) == []


# --- damaged and wrong files ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def made_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("made_run")
    result = cli("train", "specs/made.yaml", "--steps", "6", "--batch-size", "32", "--limit", "256", "--data", "binarized-mnist-5k", "--out", str(out),
                 "--quiet", "--set", "params.hidden=32")
    assert result.returncode == 0, result.stderr
    return out


def test_a_damaged_best_checkpoint_falls_back_to_the_last_one_and_says_so(made_run, tmp_path):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(made_run, run)
    data = (run / "best.safetensors").read_bytes()
    (run / "best.safetensors").write_bytes(data[: len(data) // 2])
    result = cli("eval", str(run), "--limit", "50")
    assert result.returncode == 0, result.stderr
    assert "best.safetensors" in result.stderr and "last.safetensors" in result.stderr
    assert "(last.safetensors)" in result.stdout
    (run / "last.safetensors").write_bytes(b"not a checkpoint at all")
    result = cli("sample", str(run), "-n", "1", "-o", str(tmp_path / "s.npy"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "last.safetensors" in result.stderr and "best.safetensors" in result.stderr


def test_non_finite_weights_are_refused(made_run, tmp_path):
    from safetensors import safe_open
    with safe_open(str(made_run / "last.safetensors"), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(made_run / "last.safetensors")
    name = next(k for k in tensors if k.startswith("model.net.") and k.endswith("weight"))
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = float("nan")
    meta["digest"] = digest(tensors, meta)          # a run that diverged writes a consistent file
    save_file(tensors, tmp_path / "nan.safetensors", metadata=meta)
    result = cli("eval", str(tmp_path / "nan.safetensors"), "--limit", "10")
    assert result.returncode == 2 and "weights are not finite" in result.stderr and "nan.safetensors" in result.stderr
    assert "nats" not in result.stdout


def test_load_model_returns_the_model_in_eval_mode(made_run):
    assert arspec.load_model(made_run).training is False


@pytest.mark.parametrize("args, says", [
    (["sample", "{run}", "-n", "0"], "argument -n: must be at least 1, got 0"),
    (["sample", "{run}", "--known", "bottom-half", "--given", "specs/made.yaml"], "--known: expected top-half, first-half, first-frames:K or a .npy mask file"),
    (["sample", "{run}", "--given", "{batch}"], "expected one item of the event's shape [1, 28, 28], got an array of shape [4, 1, 28, 28]"),
    (["sample", "{run}", "--temperature", "0"], "argument --temperature: must be a positive number, got 0"),
    (["sample", "{run}", "-o", "{tmp}/s.jpg"], "the format follows the extension"),
    (["sample", "{run}", "-o", "{tmp}/s.gif"], "a GIF needs a video event"),
    (["graph", "specs/made.yaml", "--element", "foo"], "--element: expected comma-separated indices"),
    (["graph", "specs/made.yaml", "--element", "0,40,1"], "inside the event [1, 28, 28]"),
    (["graph", "specs/wavenet.yaml", "--element", "0,5"], "inside the event [16000]"),
    (["eval", "{run}", "--limit", "-3"], "argument --limit: must be at least 1, got -3"),
    (["sample", "{run}", "--context", "genre"], "expected NAME=CLASS"),
    (["sample", "{run}", "--context", "genre=1"], "no conditioning named genre"),
    (["train", "specs/made.yaml", "--epochs", "many"], "--epochs"),
    (["eval", "{tmp}/missing"], "missing"),
])
def test_every_bad_argument_is_one_located_line_with_exit_2(made_run, tmp_path, args, says):
    np.save(tmp_path / "batch.npy", np.zeros((4, 1, 28, 28), dtype=np.int64))
    filled = [a.format(run=made_run, batch=tmp_path / "batch.npy", tmp=tmp_path) for a in args]
    result = cli(*filled)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], result.stderr
    assert "Traceback" not in result.stderr and "[1, 16000]" not in result.stderr


def test_completion_says_when_it_is_approximate(made_run, tmp_path):
    np.save(tmp_path / "item.npy", np.zeros((1, 28, 28), dtype=np.int64))
    exact = cli("sample", str(made_run), "-n", "1", "--given", str(tmp_path / "item.npy"), "--known", "top-half", "-o", str(tmp_path / "a.npy"))
    assert exact.returncode == 0 and "approximate" not in exact.stderr
    bottom = np.zeros((1, 28, 28), dtype=bool)
    bottom[:, 14:] = True
    np.save(tmp_path / "bottom.npy", bottom)
    approx = cli("sample", str(made_run), "-n", "1", "--given", str(tmp_path / "item.npy"), "--known", str(tmp_path / "bottom.npy"),
                 "-o", str(tmp_path / "b.npy"))
    assert approx.returncode == 0 and "completion is approximate" in approx.stderr
    given = np.load(tmp_path / "b.npy")[0]
    assert (given[:, 14:] == 0).all()                 # the known elements are kept
    model = arspec.load_model(made_run)
    with pytest.warns(UserWarning, match="completion is approximate"):
        model.sample(1, given=torch.zeros(1, 28, 28), known=torch.as_tensor(bottom))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.sample(1, given=torch.zeros(1, 28, 28), known=torch.as_tensor(~bottom))


def test_temperature_near_zero_draws_the_most_likely_value_whatever_the_seed(made_run):
    model = arspec.load_model(made_run)
    draws = [model.sample(2, generator=torch.Generator().manual_seed(seed), temperature=1e-4) for seed in range(3)]
    assert all(torch.equal(draws[0], d) for d in draws[1:])
    hot = [model.sample(2, generator=torch.Generator().manual_seed(seed), temperature=1.0) for seed in range(2)]
    assert not torch.equal(hot[0], hot[1])


DROPOUT_PIXELCNN = """\
name: dropout_pixelcnn
event: {shape: [1, 6, 6]}
distribution: {type: bernoulli}
graph:
  first: {op: masked_conv2d, inputs: [x], channels: 8, kernel: 3, mask: A, activation: relu}
  drop:  {op: dropout, p: 0.5}
  mid:   {op: masked_conv2d, channels: 8, kernel: 3, mask: B, activation: relu, residual: first}
  out:   {op: conv1x1, channels: output, mask: B}
"""


@pytest.mark.parametrize("backend", ["torch", "torch-codegen"])
def test_dropout_is_random_while_training_and_the_identity_in_eval(backend):
    spec = arspec.parse_spec(DROPOUT_PIXELCNN)
    without = arspec.parse_spec(DROPOUT_PIXELCNN.replace("  drop:  {op: dropout, p: 0.5}\n", ""))
    report = arspec.analyze(spec)
    assert report.ok
    assert np.array_equal(report.dependencies, arspec.analyze(without).dependencies)   # elementwise for the verifier
    model = arspec.compile(spec, backend=backend, seed=0)
    x = torch.randint(0, 2, (4, 1, 6, 6))
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))
    plain = arspec.compile(without, backend=backend, seed=0).eval()
    plain.load_state_dict(model.state_dict())
    assert torch.allclose(plain(x), model(x))


def test_a_model_without_parameters_runs():
    spec = arspec.parse_spec("name: p\nevent: {shape: [1, 4, 4]}\ndistribution: {type: bernoulli}\n"
                             "graph:\n  shifted: {op: shift, inputs: [x], by: [1, 0]}\n")
    model = arspec.compile(spec)
    assert sum(p.numel() for p in model.parameters()) == 0
    assert model.device == torch.device("cpu")
    assert torch.isfinite(model.log_prob(torch.zeros(2, 1, 4, 4))).all()
    assert model.sample(2).shape == (2, 1, 4, 4)


# --- training a researcher trusts -----------------------------------------------------------------

def _small_made(out: Path, **flags):
    spec = arspec.load_spec(ROOT / "specs" / "made.yaml", overrides=["params.hidden=24", "event.shape=[1,8,8]"])
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(400, 1, 8, 8, generator=g) < 0.3).long()
    data = from_arrays({"x": x.numpy()}, "random bits")
    config = TrainConfig.from_spec(spec, out, batch_size=32, quiet=True, **flags)
    return spec, data, config


def _same_weights(a: Path, b: Path) -> bool:
    first, second = load_file(a / "last.safetensors"), load_file(b / "last.safetensors")
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_an_interrupted_run_resumed_equals_an_uninterrupted_one_bit_for_bit(tmp_path, capsys, monkeypatch):
    from arspec.train import trainer
    plan = dict(steps=14, epochs=3, warmup_steps=4, schedule="cosine")
    train(*_small_made(tmp_path / "whole", **plan))
    step = trainer._Run.step

    def interrupted(self, items):
        if self.state["step"] == 6:                   # mid-epoch: an epoch has 10 steps
            raise KeyboardInterrupt
        return step(self, items)
    monkeypatch.setattr(trainer._Run, "step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(*_small_made(tmp_path / "parted", **plan))
    monkeypatch.setattr(trainer._Run, "step", step)
    capsys.readouterr()
    train(*_small_made(tmp_path / "parted", resume=True, **plan))
    assert "resuming from step 6 (epoch 1, batch 7)" in capsys.readouterr().out
    assert _same_weights(tmp_path / "whole", tmp_path / "parted")
    steps = [int(r["step"]) for r in csv_rows(tmp_path / "parted" / "loss.csv")]
    assert steps == list(range(1, 15))                # every step once, none repeated


def test_a_run_extended_with_more_steps_equals_the_longer_run(tmp_path):
    """--steps N then --resume --steps M: the same weights as M steps at once (with a schedule that
    does not depend on the run's length; cosine decays over the steps of the run it is given)."""
    train(*_small_made(tmp_path / "whole", steps=14, epochs=3, warmup_steps=4))
    train(*_small_made(tmp_path / "parted", steps=6, epochs=3, warmup_steps=4))
    train(*_small_made(tmp_path / "parted", steps=14, epochs=3, warmup_steps=4, resume=True))
    assert _same_weights(tmp_path / "whole", tmp_path / "parted")


def test_early_stopping_ends_the_run_when_validation_stops_improving(tmp_path):
    spec, data, config = _small_made(tmp_path, epochs=40, patience=2, lr=0.05)
    result = train(spec, data, config)
    history = list(csv_rows(tmp_path / "epochs.csv"))
    assert result["stopped"] and len(history) < 40
    validations = [float(r["validation_nats"]) for r in history]
    best = int(np.argmin(validations))
    assert len(validations) - 1 - best == 2          # exactly `patience` validations without improvement
    assert [r["best"] for r in history].count("1") >= 1 and history[best]["best"] == "1"


def test_per_step_and_per_epoch_curves_are_written(tmp_path):
    spec, data, config = _small_made(tmp_path, epochs=2)
    train(spec, data, config)
    steps = list(csv_rows(tmp_path / "loss.csv"))
    per_epoch = len(data.train) // 32 + (len(data.train) % 32 > 0)
    assert [int(r["step"]) for r in steps] == list(range(1, 2 * per_epoch + 1))
    assert all(float(r["lr"]) > 0 and np.isfinite(float(r["train_nats"])) for r in steps)
    validated = [r for r in steps if r["validation_nats"]]
    assert [int(r["step"]) for r in validated] == [per_epoch, 2 * per_epoch]
    assert [r["best"] for r in validated].count("1") == 1
    assert len(list(csv_rows(tmp_path / "epochs.csv"))) == 2
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_epochs_csv_is_written_after_each_validation_not_only_at_the_end(tmp_path, monkeypatch):
    """A long run can be watched: epochs.csv holds every validation so far while training goes on."""
    from arspec.train import trainer
    monkeypatch.setattr(trainer._Run, "finish", lambda self: None)          # the run never reaches its end
    spec, data, config = _small_made(tmp_path, epochs=2)
    train(spec, data, config)
    rows = list(csv_rows(tmp_path / "epochs.csv"))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(np.isfinite(float(r["validation_nats"])) for r in rows)
    assert not (tmp_path / "loss.png").exists()


def test_warmup_raises_the_learning_rate_linearly(tmp_path):
    spec, data, config = _small_made(tmp_path, steps=8, warmup_steps=4)
    train(spec, data, config)
    lrs = [float(r["lr"]) for r in csv_rows(tmp_path / "loss.csv")]
    peak = config.lr
    assert lrs[:4] == pytest.approx([peak * k / 4 for k in range(1, 5)])
    assert lrs[4:] == pytest.approx([peak] * 4)


def csv_rows(path: Path):
    import csv
    with open(path, newline="") as f:
        yield from csv.DictReader(f)


def test_checkpoint_meta_records_the_vocabulary(genre_run):
    from safetensors import safe_open
    _, _, run = genre_run
    with safe_open(str(run / "best.safetensors"), framework="pt") as f:
        meta = json.loads(f.metadata()["meta"])
    assert meta["vocab"] == VOCAB
