"""The code-generating backend: `arspec export` writes one standalone PyTorch file per spec, which
runs without arspec, computes the interpreter's log-probabilities, samples from its own cache,
trains, and goes through torch.compile and torch.export."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import arspec
from arspec.dynamic import dynamic_check, generic_parameters
from tests.test_zoo import ZOO, tiny_overrides

ROOT = Path(__file__).resolve().parent.parent


def _exported(tmp_path: Path, path: Path) -> tuple[Path, arspec.ModelSpec]:
    spec = arspec.load_spec(path, overrides=tiny_overrides(path))
    out = tmp_path / f"{path.stem}_model.py"
    out.write_text(arspec.export(spec, fast_sampler=True))
    return out, spec


def test_the_generated_file_imports_nothing_from_arspec(tmp_path):
    out, _ = _exported(tmp_path, ROOT / "specs" / "wavenet_conditional.yaml")
    imported = {n.module if isinstance(n, ast.ImportFrom) else a.name
                for n in ast.walk(ast.parse(out.read_text())) if isinstance(n, (ast.Import, ast.ImportFrom))
                for a in (n.names if isinstance(n, ast.Import) else [n])}
    standard = {"__future__", "base64", "contextlib", "ctypes", "dataclasses", "fcntl", "functools", "hashlib", "json", "math", "os",
                "pathlib", "platform", "shutil", "stat", "subprocess", "tempfile", "typing", "warnings", "zlib"}   # the C step compiles and loads with these
    assert {m.split(".")[0] for m in imported if m} <= standard | {"numpy", "torch", "scipy", "threadpoolctl"}


def test_every_zoo_export_runs_without_arspec_and_matches_the_interpreter(tmp_path):
    """One process with arspec made unimportable runs every exported zoo model on the interpreter's
    weights: float64 log-probabilities equal to 1e-6, cached samples (the CPU's plan and the
    accelerators' static program) equal to naive ones."""
    cases = []
    for path in ZOO:
        out, spec = _exported(tmp_path, path)
        model = arspec.compile(spec, seed=0, dtype=torch.float64).eval()
        generic_parameters(model, 1, spec.ir)
        x, context = model.example_inputs(3, torch.Generator().manual_seed(0))
        weights = tmp_path / f"{path.stem}.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
        inputs = tmp_path / f"{path.stem}_inputs.safetensors"
        save_file({"x": x.contiguous(), **{f"context.{k}": v.contiguous() for k, v in context.items()}}, str(inputs))
        with torch.no_grad():
            expected = model.log_prob(x, **context).tolist()
        cases.append({"module": out.stem, "weights": str(weights), "inputs": str(inputs), "expected": expected})
    script = textwrap.dedent(f"""
        import importlib, json, sys
        for name in ("arspec", "arspec_torch", "arspec_torch_codegen"):
            sys.modules[name] = None                     # any import of them now fails
        sys.path.insert(0, {str(tmp_path)!r})
        import torch
        from safetensors.torch import load_file
        results = {{}}
        for case in json.loads({json.dumps(json.dumps(cases))}):
            model = importlib.import_module(case["module"]).Model().double().eval()
            model.load_state_dict(load_file(case["weights"]))
            inputs = load_file(case["inputs"])
            context = {{k.removeprefix("context."): v for k, v in inputs.items() if k.startswith("context.")}}
            with torch.no_grad():
                got = model.log_prob(inputs["x"], **context)
            error = (got - torch.tensor(case["expected"], dtype=torch.float64)).abs().max().item()
            small = {{k: v[:2] for k, v in context.items()}}
            fast = model.sample(2, generator=torch.Generator().manual_seed(5), cache=True, **small)
            slow = model.sample(2, generator=torch.Generator().manual_seed(5), cache=False, **small)
            same = bool(torch.equal(fast, slow))
            if model.incremental is not None and hasattr(model.incremental, "engine_for"):
                model.incremental.engine = "static"      # the accelerators' program, carried in the file too
                static = model.sample(2, generator=torch.Generator().manual_seed(5), cache=True, **small)
                same = same and bool(torch.equal(static, slow))
            results[case["module"]] = [error, same, model.incremental is not None]
        print(json.dumps(results))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(result.stdout)
    assert len(results) == len(ZOO)
    for name, (error, same, _) in results.items():
        assert error < 1e-6 and same, (name, error, same)
    assert results["wavenet_model"][2] and results["gated_pixelcnn_model"][2] and results["nade_model"][2]


@pytest.mark.parametrize("path", ZOO, ids=lambda p: p.stem)
def test_the_dynamic_check_verifies_the_generated_module(path):
    spec = arspec.load_spec(path, overrides=tiny_overrides(path))
    result = dynamic_check(spec, arspec.compile(spec, backend="torch-codegen", seed=0))
    assert result.agrees, (result.missing[:5], result.unexpected[:5])


def _small_gated():
    spec = arspec.load_spec(ROOT / "specs" / "gated_pixelcnn.yaml", overrides=["event.shape=[1,6,6]", "params.channels=4", "params.double=8"])
    model = arspec.compile(spec, backend="torch-codegen", seed=0).eval()
    return model, model.example_inputs(2, torch.Generator().manual_seed(0))[0]


def test_the_generated_module_goes_through_torch_compile_in_one_graph():
    torch._dynamo.reset()
    model, x = _small_gated()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        assert torch.allclose(compiled(x), model(x))


@pytest.mark.slow
def test_the_generated_module_compiles_with_inductor():
    torch._dynamo.reset()
    model, x = _small_gated()
    with torch.no_grad():
        assert torch.allclose(torch.compile(model.log_prob)(x), model.log_prob(x), atol=1e-5)


def test_the_generated_module_goes_through_torch_export():
    model, x = _small_gated()
    program = torch.export.export(model, (x,))
    assert torch.allclose(program.module()(x), model(x))


def test_arspec_export_writes_the_file_and_a_trained_checkpoints_weights(tmp_path):
    from tests.test_cli import run
    run_dir = tmp_path / "run"
    trained = run("train", "specs/made.yaml", "--steps", "2", "--limit", "64", "--batch-size", "32", "--quiet", "--data", "binarized-mnist-5k", "--out", str(run_dir),
                  "--set", "params.hidden=16", "--set", "event.shape=[1,28,28]")
    assert trained.returncode == 0, trained.stderr
    result = run("export", str(run_dir), "-o", str(tmp_path / "made_export.py"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "made_export.py").exists() and (tmp_path / "made_export.safetensors").exists()
    sys.path.insert(0, str(tmp_path))
    try:
        from made_export import Model
        from safetensors.torch import load_file
        model = Model().eval()
        model.load_state_dict(load_file(str(tmp_path / "made_export.safetensors")))
        reference = arspec.load_model(run_dir).eval()
        x = torch.randint(0, 2, (4, 1, 28, 28))
        with torch.no_grad():
            assert torch.equal(model.log_prob(x), reference.log_prob(x))
    finally:
        sys.path.remove(str(tmp_path))


def test_training_runs_through_the_generated_code(tmp_path):
    from tests.test_cli import run
    result = run("train", "specs/gated_pixelcnn.yaml", "--backend", "torch-codegen", "--steps", "2", "--batch-size", "8", "--limit", "32", "--data", "binarized-mnist-5k",
                 "--quiet", "--out", str(tmp_path), "--set", "params.channels=4", "--set", "params.double=8")
    assert result.returncode == 0, result.stderr[-2000:]
    model = arspec.load_model(tmp_path)                # a checkpoint never chooses the code that runs: the interpreter
    assert not hasattr(model, "generated_source")
    generated = arspec.load_model(tmp_path, backend="torch-codegen")      # unless the caller asks
    assert generated.generated_source.exists()
    x, _ = model.example_inputs(2, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(model.log_prob(x), generated.log_prob(x), atol=1e-4)


def test_a_plain_export_reads_like_a_hand_written_file_and_matches_the_interpreter(tmp_path):
    """By default the file is the model, its log-prob and a one-pass-per-step sampler, in a few
    hundred lines that import only torch, numpy and the standard library; --with-fast-sampler
    adds the cached samplers."""
    spec = arspec.load_spec(ROOT / "specs" / "made.yaml", overrides=["params.hidden=8", "event.shape=[1,4,4]"])
    plain, fast = arspec.export(spec), arspec.export(spec, fast_sampler=True)
    assert len(plain.splitlines()) < 700 < 2000 < len(fast.splitlines())
    assert "ctypes" not in plain and "subprocess" not in plain and "StepPlan" not in plain
    path = tmp_path / "plain_made.py"
    path.write_text(plain)
    sys.path.insert(0, str(tmp_path))
    try:
        import plain_made
    finally:
        sys.path.remove(str(tmp_path))
    model = plain_made.Model().double().eval()
    reference = arspec.compile(spec, seed=0, dtype=torch.float64).eval()
    model.load_state_dict(reference.state_dict())
    x, _ = reference.example_inputs(3, torch.Generator().manual_seed(0))
    assert torch.allclose(model.log_prob(x), reference.log_prob(x), atol=1e-9)
    assert model.incremental is None
    assert torch.equal(model.sample(2, generator=torch.Generator().manual_seed(3)),
                       reference.sample(2, generator=torch.Generator().manual_seed(3), cache=False))


def test_the_exported_forward_adds_wavenets_skips_as_they_come():
    """Memory planning in the generated file: the sum of the 30 skip outputs is a running sum, so
    at no line of `Network.forward` are more than two skip outputs alive (all 30 were before)."""
    spec = arspec.load_spec(ROOT / "specs" / "wavenet.yaml", overrides=["event.shape=[64]"])
    tree = ast.parse(arspec.export(spec))
    forward = next(f for c in ast.walk(tree) if isinstance(c, ast.ClassDef) and c.name == "Network"
                   for f in c.body if isinstance(f, ast.FunctionDef) and f.name == "forward")
    live: set[str] = set()
    most = 0
    for statement in forward.body:
        if isinstance(statement, ast.Assign):
            live |= {t.id for t in statement.targets if isinstance(t, ast.Name) and t.id.endswith("skip__conv")}
        elif isinstance(statement, ast.Delete):
            live -= {t.id for t in statement.targets if isinstance(t, ast.Name)}
        most = max(most, len(live))
    assert most == 2
    sums = [s for s in forward.body if isinstance(s, ast.Assign) and s.targets[0].id == "stack_skip__add"]
    assert len(sums) == 29 and all(isinstance(s.value, ast.BinOp) for s in sums)
