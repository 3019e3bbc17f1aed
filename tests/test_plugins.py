"""Plugins, installed as separate packages exactly as a user would: backends through the
`arspec.backends` entry points and ops through `arspec.ops`. The op fixture adds a 3-D masked
convolution over video events [T, C, H, W] and is used end to end: check, dynamic check, schema and
error messages, compile, a training step, cached sampling equal to naive sampling, its own tests."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.test_cli import ROOT, run

FIXTURES = ROOT / "tests" / "fixtures"
VIDEO = """\
name: tiny_video_pixelcnn
event: {shape: [3, 2, 4, 4]}
distribution: {type: categorical, classes: 3}
graph:
  first: {op: masked_conv3d, inputs: [x], channels: 6, kernel: 3, mask: A, activation: relu}
  body:  {op: masked_conv3d, channels: 6, kernel: [1, 3, 3], mask: B, activation: relu, residual: first, repeat: {times: 2}}
  out:   {op: masked_conv3d, channels: output, kernel: 1, mask: B}
"""


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("plugins")
    sources = tmp_path_factory.mktemp("sources")
    for fixture in ("echo_backend", "broken_backend", "conv3d_op", "broken_op"):
        # build from a private copy: test workers may install the same fixture at once
        shutil.copytree(FIXTURES / fixture, sources / fixture)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target),
                        str(sources / fixture)], check=True, capture_output=True, timeout=600)
    return target


@pytest.fixture(scope="module")
def video_spec(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("specs") / "video.yaml"
    path.write_text(VIDEO)
    return path


def python(code: str, plugin_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=ROOT,
                          env={"PYTHONPATH": str(plugin_path), "PATH": "/usr/bin:/bin"}, timeout=600)


def test_a_third_party_backend_is_discovered_and_used(plugin_path):
    env = {"PYTHONPATH": str(plugin_path)}
    listing = run("backends", env=env)
    assert listing.returncode == 0
    assert "echo: float64 echo" in listing.stdout
    assert "torch:" in listing.stdout and "torch-codegen:" in listing.stdout
    assert "broken: failed to load, skipped (ModuleNotFoundError" in listing.stdout
    result = run("check", "--dynamic", "--backend", "echo", "specs/nade.yaml", "--set", "event.shape=[1,3,3]", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    compiled = run("compile", "--backend", "echo", "specs/made.yaml", env=env)
    assert compiled.returncode == 0, compiled.stderr
    missing = run("compile", "--backend", "nope", "specs/made.yaml", env=env)
    assert missing.returncode == 2 and "unknown backend 'nope'" in missing.stderr and "Traceback" not in missing.stderr


def test_an_op_from_another_package_is_listed_and_broken_op_plugins_are_skipped(plugin_path):
    listing = run("ops", env={"PYTHONPATH": str(plugin_path)})
    assert listing.returncode == 0, listing.stderr
    assert "masked_conv3d  [arspec-conv3d-op]" in listing.stdout
    assert "missing_dependency: failed to load, skipped (ModuleNotFoundError" in listing.stdout
    assert "conv1x1: failed to load, skipped (ValueError: op name 'conv1x1' is already taken (by arspec))" in listing.stdout


def test_the_plugin_op_is_verified_statically_and_dynamically_on_rank_4_events(plugin_path, video_spec):
    result = run("check", "--dynamic", "--json", str(video_spec), env={"PYTHONPATH": str(plugin_path)})
    assert result.returncode == 0, result.stdout + result.stderr
    (report,) = json.loads(result.stdout)
    assert report["ok"] and report["dynamic"]["agrees"] and report["dynamic"]["compared"] == 96 * 96


def test_a_leaking_use_of_the_plugin_op_is_reported_at_its_node(plugin_path, video_spec, tmp_path):
    leaking = tmp_path / "leak.yaml"
    leaking.write_text(VIDEO.replace("mask: A", "mask: B"))
    result = run("check", str(leaking), env={"PYTHONPATH": str(plugin_path)})
    assert result.returncode == 1
    assert f"{leaking}:5:3: graph.first: leak" in result.stdout


def test_the_schema_and_error_messages_know_the_plugin_op(plugin_path, tmp_path):
    env = {"PYTHONPATH": str(plugin_path)}
    schema = json.loads(run("schema", env=env).stdout)
    assert "MaskedConv3dSpec" in schema["$defs"]
    typo = tmp_path / "typo.yaml"
    typo.write_text(VIDEO.replace("op: masked_conv3d, inputs: [x]", "op: masked_conv3e, inputs: [x]"))
    result = run("check", str(typo), env=env)
    assert result.returncode == 2
    assert "graph.first.op: unknown op 'masked_conv3e' (did you mean 'masked_conv3d'?)" in result.stdout
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(VIDEO.replace("kernel: [1, 3, 3]", "kernel: [2, 3, 3]"))
    result = run("check", str(wrong), env=env)
    assert result.returncode == 2 and "graph.body.kernel: masked_conv3d needs odd kernel sizes, got [2, 3, 3]" in result.stdout
    without = run("check", str(typo.with_name("x.yaml")), env={})
    assert without.returncode == 2


def test_the_plugin_op_compiles_trains_and_samples_from_its_cache(plugin_path, video_spec):
    result = python(f"""
        import torch, arspec
        from arspec.data.registry import Splits
        from arspec.train import TrainConfig, train
        spec = arspec.load_spec({str(video_spec)!r})
        model = arspec.compile(spec, seed=0)
        assert sum(p.numel() for p in model.parameters()) == spec.ir.parameters
        assert type(model.incremental.cache).__name__ == "WindowCache"
        fast = model.sample(3, generator=torch.Generator().manual_seed(1), cache=True)
        slow = model.sample(3, generator=torch.Generator().manual_seed(1), cache=False)
        assert fast.shape == (3, 3, 2, 4, 4) and torch.equal(fast, slow)
        x = torch.randint(0, 3, (32, 3, 2, 4, 4), generator=torch.Generator().manual_seed(0))
        data = Splits(x[:24], x[24:28], x[28:], "random video")
        result = train(spec, data, TrainConfig.from_spec(spec, {str(video_spec.parent / "run")!r}, steps=2, batch_size=8, quiet=True))
        assert result["steps"] == 2
        trained = arspec.load_model({str(video_spec.parent / "run" / "last.safetensors")!r})
        assert torch.isfinite(trained.log_prob(x[:4])).all()
        print("ok")
    """, plugin_path)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


@pytest.mark.slow          # make test-all: the plugin's own suite in a subprocess (its discovery and use are tested here)
def test_the_plugin_passes_its_own_tests(plugin_path):
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(FIXTURES / "conv3d_op" / "tests")],
                            capture_output=True, text=True, cwd=ROOT, env={"PYTHONPATH": f"{plugin_path}:{ROOT}", "PATH": "/usr/bin:/bin"},
                            timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 passed" in result.stdout
