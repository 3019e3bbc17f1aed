"""The command line as a user meets it: exit codes, one located line per problem, no tracebacks,
plugins discovered through entry points."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARSPEC = [sys.executable, "-m", "arspec"]


def run(*args: str, env: dict | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([*ARSPEC, *args], capture_output=True, text=True, cwd=cwd, env={**os.environ, **(env or {})}, timeout=600)


def test_check_accepts_the_whole_zoo():
    result = run("check", *sorted(str(p) for p in (ROOT / "specs").glob("*.yaml")))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(": ok (") == len(list((ROOT / "specs").glob("*.yaml")))


def test_strict_turns_the_pixelcnn_blind_spot_into_a_failure():
    assert run("check", "specs/pixelcnn.yaml").returncode == 0
    result = run("check", "--strict", "specs/pixelcnn.yaml")
    assert result.returncode == 1
    assert "blind spot" in result.stdout and "specs/pixelcnn.yaml:" in result.stdout


def test_strict_passes_the_gated_rgb_wavenet_and_diagonal_bilstm_models():
    result = run("check", "--strict", "specs/gated_pixelcnn.yaml", "specs/pixelcnn_rgb.yaml", "specs/wavenet.yaml",
                 "specs/diagonal_bilstm.yaml")
    assert result.returncode == 0, result.stdout


def test_every_broken_spec_exits_1_under_strict_with_a_located_message():
    paths = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "specs" / "broken").glob("*.yaml"))]
    result = run("check", "--strict", *paths)            # one process; exit 1 if any spec fails
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
    for path in paths:
        summary = next(line for line in result.stdout.splitlines() if line.startswith(f"{path}: "))
        assert not summary.startswith(f"{path}: ok"), summary
        assert re.search(rf"^  {re.escape(path)}:\d+:\d+: ", result.stdout, re.M), path


def test_invalid_and_hostile_specs_exit_2_without_traceback(tmp_path):
    marker = tmp_path / "executed"
    hostile = tmp_path / "hostile.yaml"
    hostile.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\nevent: {{shape: [1, 2]}}\n"
                       f"distribution: {{type: bernoulli}}\ngraph: {{a: {{op: relu}}, a: {{op: tanh}}}}\n")
    garbage = tmp_path / "garbage.yaml"
    garbage.write_bytes(b"\xff\xfe\x00 not yaml at all: [")
    for path in (hostile, garbage):
        result = run("check", str(path))
        assert result.returncode == 2
        assert "Traceback" not in result.stdout + result.stderr
        assert f"{path}:" in result.stdout + result.stderr
    assert not marker.exists()
    out = run("check", str(hostile)).stdout
    assert "unsupported YAML tag" in out and "duplicate key 'a'" in out


def test_check_json_output_is_machine_readable():
    result = run("check", "--json", "specs/made.yaml", "specs/broken/mask_b_first_layer.yaml")
    data = json.loads(result.stdout)
    assert [d["status"] for d in data] == ["ok", "not autoregressive"]
    assert data[1]["errors"][0]["path"] == "graph.input"
    assert result.returncode == 1


def test_check_dynamic_agrees_with_static_analysis():
    result = run("check", "--dynamic", "specs/gated_pixelcnn.yaml", "--set", "event.shape=[1,5,5]")
    assert result.returncode == 0, result.stdout
    assert "dynamic check agrees" in result.stdout


def test_set_overrides_are_validated_on_the_command_line():
    result = run("check", "specs/made.yaml", "--set", "graph.h1.features=-3")
    assert result.returncode == 2
    assert "--set graph.h1.features=-3:1:1: graph.h1.features: must be >= 1, got -3" in result.stdout


def test_compile_prints_a_summary_and_writes_a_checkpoint(tmp_path):
    out = tmp_path / "init.safetensors"
    result = run("compile", "specs/gated_pixelcnn.yaml", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "parameters" in result.stdout and "autoregressive" in result.stdout
    assert out.exists()


def test_schema_command_prints_the_json_schema():
    result = run("schema")
    schema = json.loads(result.stdout)
    assert schema["title"] == "arspec model spec" and "graph" in schema["$defs"]["ModelSpec"]["properties"]
    assert "parts" in schema["$defs"]["CompositeSpec"]["properties"]                 # models of several parts


def test_graph_command_draws_the_receptive_field(tmp_path):
    out = tmp_path / "rf.png"
    result = run("graph", "specs/pixelcnn.yaml", "-o", str(out), "--element", "0,10,10")
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sigterm_saves_the_exact_state_and_the_run_resumes(tmp_path):
    """A scheduler's preemption (SIGTERM) is handled like Ctrl-C: exit 143, last.safetensors holds
    the state at the step it stopped, and --resume goes on from there."""
    import signal
    import time
    out = tmp_path / "run"
    args = ["train", "specs/made.yaml", "--set", "params.hidden=16", "--data", "binarized-mnist-5k", "--limit", "64",
            "--batch-size", "32", "--epochs", "100000", "--quiet", "--out", str(out)]
    process = subprocess.Popen([*ARSPEC, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (out / "epochs.csv").exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stdout + stderr
    assert "terminated (SIGTERM) at step" in stdout and "Traceback" not in stderr
    from arspec.checkpoint import read_checkpoint
    _, metadata = read_checkpoint(out / "last.safetensors")
    assert "terminated" in json.dumps(metadata)
    step = int(re.search(r"terminated \(SIGTERM\) at step (\d+)", stdout).group(1))
    resumed = run(*args[:-5], "--epochs", str(step // 2 + 1), "--quiet", "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from step {step}" in resumed.stdout


def test_check_dynamic_takes_a_memory_budget_for_the_rows_it_stacks(monkeypatch, capsys):
    """`--max-memory` bounds the perturbed rows one measuring call stacks: at 4 MB a Gated
    PixelCNN over 8x8 stacks a few rows (float64: 2; 64 at the default 4 GiB), and the check still agrees."""
    import arspec.dynamic as dynamic
    from arspec.cli.main import main
    seen = []
    original = dynamic.measure_columns

    def recording(model, *args, **kwargs):
        seen.append(model.rows_within())
        return original(model, *args, **kwargs)
    monkeypatch.setattr(dynamic, "measure_columns", recording)
    assert main(["check", "--dynamic", "--max-memory", "4MB", "specs/gated_pixelcnn.yaml", "--set", "event.shape=[1,8,8]"]) == 0
    assert seen and max(seen) <= 5 and "dynamic check agrees" in capsys.readouterr().out
    with pytest.raises(SystemExit) as bad:
        main(["check", "--dynamic", "--max-memory", "lots", "specs/wavenet.yaml"])
    assert bad.value.code == 2 and "expected a size such as 4GB" in capsys.readouterr().err
