"""The platform as a contributor meets it: the core (spec language, IR, analysis, the static
commands) runs without any deep-learning framework; ops and primitives are the only source of
parameters and semantics; the core's packages do not import each other in circles."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings

import arspec
from tests.helpers import spec_from
from tests.strategies import (
    causal_sequences,
    examples,
    gated_stacks,
    made_specs,
    masked_conv_stacks,
    multiscale_pyramids,
    nade_specs,
    recurrent_stacks,
)

ROOT = Path(__file__).resolve().parent.parent
ZOO = sorted((ROOT / "specs").glob("*.yaml"))
CORE = ["spec", "ir", "ops", "primitives", "domains", "analysis"]
CORE_MODULES = ["__init__", "backends", "errors", "types", "ordering", "distributions", "loader", "cli/main", "cli/check", "cli/graph",
                "cli/ops", "cli/backends", "pictures", "graph_figure"]
COUNTS = settings(max_examples=examples(10), deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _core_files() -> list[Path]:
    files = [p for package in CORE for p in (ROOT / "arspec" / package).rglob("*.py")]
    return files + [ROOT / "arspec" / f"{m}.py" for m in CORE_MODULES]


def test_the_core_imports_no_deep_learning_framework_and_no_backend():
    for path in _core_files():
        bad = {m for m in _imports(path) if m.split(".")[0] in ("torch", "jax", "tensorflow", "arspec_torch", "arspec_torch_codegen")}
        assert not bad, (path, bad)


@pytest.mark.parametrize("command", [["check", *map(str, ZOO)], ["graph", "specs/gated_pixelcnn.yaml", "-o", "{tmp}/rf.png"],
                                     ["schema"], ["ops"]], ids=["check", "graph", "schema", "ops"])
def test_static_commands_never_load_torch(command, tmp_path):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in command]
    code = f"""
import sys, io, contextlib
from arspec.cli.main import main
with contextlib.redirect_stdout(io.StringIO()):
    rc = main({argv!r})
assert rc == 0, rc
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "arspec_torch"))
print(loaded)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def _package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {p: set() for p in CORE}
    for package in CORE:
        for path in (ROOT / "arspec" / package).rglob("*.py"):
            for module in _imports(path):
                parts = module.split(".")
                if parts[0] == "arspec" and len(parts) > 1 and parts[1] in graph and parts[1] != package:
                    graph[package].add(parts[1])
    return graph


def test_core_packages_import_each_other_without_cycles():
    graph = _package_graph()
    state: dict[str, int] = {}

    def visit(p: str, trail: list[str]) -> None:
        assert state.get(p) != 1, f"import cycle: {' -> '.join(trail + [p])}"
        if state.get(p) == 2:
            return
        state[p] = 1
        for q in sorted(graph[p]):
            visit(q, trail + [p])
        state[p] = 2

    for package in CORE:
        visit(package, [])
    assert "ir" in graph["analysis"] and "primitives" in graph["ops"]      # the layering the check runs on


def _assert_counts_agree(spec) -> None:
    model = arspec.compile(spec, seed=0)
    if isinstance(spec, arspec.CompositeSpec):                   # every part, under its own module
        ir = spec.ir
        parts = ([(ir.encoder, model.encoder), (ir.decoder, model.decoder.net)] + ([(ir.prior, model.prior.net)] if ir.prior else [])
                 if ir.kind == "vae" else [(flow_ir, flow.net) for flow_ir, flow in zip(ir.flows, model.flows)])
        for part_ir, module in parts:
            named = {name: tuple(p.shape) for name, p in module.named_parameters()}
            assert named == {name: tuple(entry.param.shape) for name, entry in part_ir.parameter_table().items()}
        assert sum(p.numel() for p in model.parameters()) == ir.parameters
        return
    table = spec.ir.parameter_table()
    named = {name.removeprefix("net."): tuple(p.shape) for name, p in model.named_parameters()}
    assert named == {name: tuple(entry.param.shape) for name, entry in table.items()}
    assert sum(p.numel() for p in model.parameters()) == spec.ir.parameters


@pytest.mark.parametrize("path", ZOO, ids=lambda p: p.stem)
def test_the_parameter_count_of_every_zoo_spec_is_the_modules(path):
    _assert_counts_agree(arspec.load_spec(path))


@COUNTS
@given(masked_conv_stacks() | gated_stacks() | causal_sequences() | recurrent_stacks() | multiscale_pyramids()
       | made_specs().map(lambda c: c[0]) | nade_specs().map(lambda c: c[0]))
def test_the_parameter_count_of_random_models_is_the_modules(text):
    _assert_counts_agree(spec_from(text))


def test_an_unshared_bias_is_counted_exactly():
    spec = spec_from("""
        name: nobias
        event: {shape: [1, 4, 4]}
        distribution: {type: bernoulli}
        graph:
          a: {op: masked_conv2d, inputs: [x], channels: 3, kernel: 3, mask: A, bias: false}
          b: {op: conv1x1, channels: output, mask: B}
    """)
    assert spec.ir.parameters == 3 * 1 * 9 + (1 * 3 + 1)
    _assert_counts_agree(spec)


def test_a_backend_that_lacks_a_primitive_is_refused_with_the_nodes_that_need_it():
    import arspec.backends as registry
    from arspec.backends import Backend, BackendError, compile_ir
    partial = Backend(name="partial", compile=lambda ir, options: None, primitives=frozenset({"masked_conv", "activation"}))
    registry._registry.loaded["partial"] = partial
    try:
        with pytest.raises(BackendError, match=r"does not implement the primitive\(s\) embedding \(used by embed\)"):
            compile_ir(arspec.load_spec(ROOT / "specs" / "wavenet.yaml").ir, "partial")
    finally:
        registry._registry.loaded.pop("partial")


def test_compile_takes_a_dtype_by_name():
    model = arspec.compile(arspec.load_spec(ROOT / "specs" / "made.yaml", overrides=["params.hidden=8"]), dtype="float64")
    assert model.dtype == torch.float64
