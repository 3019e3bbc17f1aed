"""Datasets and audio: CIFAR-10 batches read without executing pickle code, WAV round trips,
mu-law companding, WAV folders as training data."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import arspec
from arspec.data import DataError, load_data
from arspec.data.audio import mu_law_decode, mu_law_encode, read_wav, wav_folder_splits, write_wav
from arspec.data.cifar import load_cifar10, read_batch

ROOT = Path(__file__).resolve().parent.parent


def _write_cifar(folder: Path, n: int = 6) -> np.ndarray:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    for name in ("data_batch_1", "data_batch_2", "test_batch"):
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": b"x", b"labels": list(range(n)), b"data": images, b"filenames": [b"a"] * n}, f, protocol=2)
    return images


def test_cifar10_batches_load_in_channel_height_width_order(tmp_path):
    images = _write_cifar(tmp_path)
    train, test = load_cifar10(tmp_path)
    assert train.shape == (12, 3, 32, 32) and test.shape == (6, 3, 32, 32)
    assert np.array_equal(test[0, 1].reshape(-1), images[0, 1024:2048])


class _Exploit:
    def __reduce__(self):
        import os
        return (os.system, ("touch /tmp/arspec-exploit",))


def test_a_malicious_cifar_file_is_refused_without_running_code(tmp_path):
    marker = Path("/tmp/arspec-exploit")
    marker.unlink(missing_ok=True)
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": _Exploit()}))
    with pytest.raises(DataError, match="refusing to load"):
        read_batch(path)
    assert not marker.exists()


def test_cifar_data_feeds_the_rgb_spec(tmp_path):
    _write_cifar(tmp_path)
    spec = arspec.load_spec(ROOT / "specs" / "pixelcnn_rgb.yaml")
    data = load_data(spec, f"cifar10:{tmp_path}")
    assert data.train.shape[1:] == (3, 32, 32) and data.train.dtype == torch.int64


def test_mu_law_round_trip_is_close_and_monotone():
    audio = np.linspace(-1, 1, 1001)
    q = mu_law_encode(audio)
    assert q.min() == 0 and q.max() == 255 and np.all(np.diff(q) >= 0)
    assert np.abs(mu_law_decode(q) - audio).max() < 0.04
    assert torch.equal(mu_law_encode(torch.as_tensor(audio)), torch.as_tensor(q))


def test_wav_files_round_trip(tmp_path):
    t = np.arange(8000) / 8000
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    write_wav(tmp_path / "a.wav", tone, 8000)
    audio, rate = read_wav(tmp_path / "a.wav")
    assert rate == 8000 and np.abs(audio - tone).max() < 1e-4


def test_a_wav_folder_becomes_mu_law_crops_at_the_spec_rate(tmp_path):
    for i in range(4):
        write_wav(tmp_path / f"{i}.wav", 0.3 * np.sin(np.arange(22050) * (0.01 + i * 0.01)), 22050)
    spec = arspec.load_spec(ROOT / "specs" / "wavenet.yaml", overrides=["event.shape=[4000]"])
    splits = wav_folder_splits(tmp_path, spec)
    assert splits.train.shape[1:] == (4000,) and splits.train.dtype == torch.int64
    assert int(splits.train.max()) <= 255 and len(splits.test) > 0
    data = load_data(spec, f"wav:{tmp_path}")
    assert len(data.train) > 0


def test_a_wav_folder_shorter_than_the_event_is_a_clear_error(tmp_path):
    write_wav(tmp_path / "short.wav", np.zeros(100), 16000)
    spec = arspec.load_spec(ROOT / "specs" / "wavenet.yaml")
    with pytest.raises(DataError, match="shorter than the event length 16000"):
        load_data(spec, f"wav:{tmp_path}")


def test_sampling_an_audio_checkpoint_writes_wav_files(tmp_path):
    import subprocess
    import sys

    from arspec.checkpoint import save_checkpoint
    spec = arspec.load_spec(ROOT / "specs" / "wavenet.yaml", overrides=["event.shape=[64]", "graph.stack.repeat.dilation.times=1"])
    save_checkpoint(tmp_path / "w.safetensors", arspec.compile(spec, seed=0), spec.ir.source, {"state": {}})
    result = subprocess.run([sys.executable, "-m", "arspec", "sample", str(tmp_path / "w.safetensors"), "-n", "2",
                             "-o", str(tmp_path / "audio.wav")], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr
    for i in range(2):
        audio, rate = read_wav(tmp_path / f"audio_{i}.wav")
        assert rate == 16000 and len(audio) == 64


def _text_spec(length: int = 64, classes: int = 256):
    return arspec.parse_spec(f"name: t\nevent: {{shape: [{length}]}}\ndistribution: {{type: categorical, classes: {classes}}}\n"
                             "graph:\n  e: {op: embedding, inputs: [x], channels: 4, shift: 1}\n  o: {op: conv1x1, channels: output}\n")


def test_python_stdlib_is_split_by_file_into_byte_crops():
    from arspec.data.text import python_stdlib_files, split_of
    root, files = python_stdlib_files()
    splits = {split_of(str(f.relative_to(root))) for f in files}
    assert splits == {"train", "validation", "test"}
    assert all(split_of(str(f.relative_to(root))) == split_of(str(f.relative_to(root))) for f in files[:50])
    data = load_data(_text_spec(), "python-stdlib")
    assert data.train.shape[1:] == (64,) and len(data.train) > len(data.test) > 0
    assert int(data.train.max()) < 256 and data.vocab is not None and len(data.vocab) == 256
    text = bytes(data.test[0].tolist()).decode("utf-8", errors="replace")
    assert len(text) > 0


def test_a_text_folder_keeps_each_file_in_one_split(tmp_path):
    from arspec.data.text import split_of
    letters = {f"f{i}.txt": chr(ord("A") + i) for i in range(40)}      # each file one letter of its own
    for name, letter in letters.items():
        (tmp_path / name).write_text(letter * 100, encoding="utf-8")
    data = load_data(_text_spec(16, 64), f"text:{tmp_path}")
    assert data.vocab is not None
    for split, items in (("test", data.test), ("validation", data.validation), ("train", data.train)):
        mine = {letter for name, letter in letters.items() if split_of(name) == split} | {"\n"}
        seen = {data.vocab[t] for t in items.unique().tolist()}
        assert seen <= mine, split


def test_too_many_characters_for_the_classes_is_a_clear_error(tmp_path):
    (tmp_path / "a.txt").write_text("abcdefghijklmnopqrstuvwxyz" * 20, encoding="utf-8")
    with pytest.raises(DataError, match="26 distinct characters"):
        load_data(_text_spec(16, 8), f"text:{tmp_path / 'a.txt'}")
