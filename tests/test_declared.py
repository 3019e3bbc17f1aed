"""Primitives declared by their step (arspec.primitives.step), with the Spatial LSTM of the
arspec-spatial-lstm package (plugins/spatial_lstm) as the one added from outside: the footprint
derived from the declaration equals the measured dependencies; the whole-tensor kernel (a
wavefront scan) equals the step evaluated position by position, values and gradients; cached
sampling and the exported file equal the interpreter; wrong declarations are refused or caught."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from arspec_torch import declared as declared_module
from arspec_torch.declared import declared, evaluate, tap_table
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import arspec
from arspec.dynamic import cache_disagreement, dynamic_check
from arspec.primitives.step import StepBuilder, StepError, scan_axes
from tests.helpers import spec_from
from tests.strategies import examples

ROOT = Path(__file__).resolve().parent.parent

SPATIAL = """
name: spatial
event: {{shape: [1, {h}, {w}]}}
distribution: {{type: bernoulli}}
graph:
  lstm1: {{op: spatial_lstm, inputs: [x], hidden: {hidden}, window: {window}, center: false}}
  lstm2: {{op: spatial_lstm, hidden: {hidden}}}
  out:   {{op: conv1x1, channels: output}}
"""


def spatial(h: int = 4, w: int = 5, hidden: int = 3, window: int = 1) -> str:
    return SPATIAL.format(h=h, w=w, hidden=hidden, window=window)


@settings(max_examples=examples(8), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(h=st.integers(2, 5), w=st.integers(2, 5), hidden=st.integers(1, 3), window=st.integers(1, 2))
def test_spatial_lstm_measured_dependencies_equal_the_derived_footprint_and_the_cache_the_graph(h, w, hidden, window):
    spec = spec_from(spatial(h, w, hidden, window))
    assert arspec.analyze(spec).ok
    result = dynamic_check(spec, arspec.compile(spec, seed=0), cache=True)
    assert result.agrees, (result.missing[:3], result.unexpected[:3], result.cache_problem)


def _cell(spec):
    model = arspec.compile(spec, seed=0).double()
    call = next(c for c in model.net.calls if "program" in c.attrs)
    return model, call, {n: getattr(model.net, f"{call.id}__{n}") for n in call.tensors}


def test_the_wavefront_kernel_equals_the_step_evaluated_position_by_position():
    spec = spec_from(spatial(4, 6, 2, 1))
    _, call, tensors = _cell(spec)
    program = call.attrs["program"]
    x = torch.randn(2, 1, 4, 6, dtype=torch.float64)
    scanned = declared(x, program=program, **tensors)
    spatial_shape, positions = (4, 6), 24
    source = torch.cat([x.reshape(2, 1, -1), x.new_zeros(2, 1, 1)], dim=2)
    out = x.new_zeros(2, program.ops[program.output].channels, positions + 1)
    for p in range(positions):                                    # raster order, one position at a time
        at = torch.tensor([p])
        out[:, :, at] = evaluate(program, tensors, lambda arg, off, at=at: source[:, :, tap_table(off, spatial_shape)[at]],
                                 lambda off, at=at: out[:, :, tap_table(off, spatial_shape)[at]])
    assert torch.allclose(scanned, out[:, :, :-1].reshape(scanned.shape), atol=1e-12)
    inputs = (x.clone().requires_grad_(), tensors["weight"].detach().clone().requires_grad_(), tensors["bias"].detach().clone().requires_grad_())
    assert torch.autograd.gradcheck(lambda a, w, b: declared(a, program=program, weight=w, bias=b), inputs)


def test_cached_sampling_and_the_exported_file_equal_the_interpreter(tmp_path):
    spec = spec_from(spatial(5, 5, 3, 2))
    model = arspec.compile(spec, seed=0).eval()
    cached = model.sample(3, generator=torch.Generator().manual_seed(1))
    naive = model.sample(3, generator=torch.Generator().manual_seed(1), cache=False)
    assert torch.equal(cached, naive)
    for engine in ("static", "torch"):                     # the other engines' steps equal them too
        model.incremental.engine = engine
        assert torch.equal(model.sample(3, generator=torch.Generator().manual_seed(1)), naive)
    path = tmp_path / "spatial_model.py"
    path.write_text(arspec.export(spec))
    code = (f"import sys, torch; sys.path.insert(0, {str(tmp_path)!r}); import spatial_model; "
            "m = spatial_model.Model(); print(sorted(m.state_dict())[:1])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    imported = {n.module if isinstance(n, ast.ImportFrom) else a.name for n in ast.walk(ast.parse(path.read_text()))
                if isinstance(n, (ast.Import, ast.ImportFrom)) for a in (n.names if isinstance(n, ast.Import) else [n])}
    assert not any(m and m.split(".")[0].startswith("arspec") for m in imported)


ENGINES = [("C", "plan", ""), ("numpy", "plan", "numpy"), ("static", "static", ""), ("torch", "torch", "")]


@pytest.mark.parametrize("label, engine, step", ENGINES, ids=[e[0] for e in ENGINES])
@settings(max_examples=examples(4), deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(h=st.integers(2, 5), w=st.integers(2, 5), hidden=st.integers(1, 3), window=st.integers(1, 2), rgb=st.booleans())
def test_every_engine_lowers_the_declared_step_to_the_graphs_values(monkeypatch, label, engine, step, h, w, hidden, window, rgb):
    """The C interpreter, the numpy step, the static program and the torch steps each lower the
    step IR: teacher-forced through the cache they give the training graph's parameters (float64,
    1e-9), and sampling through them draws what the naive loop draws."""
    from arspec_torch import ccache
    if label == "C" and ccache.compiler() is None:
        pytest.skip("no C compiler here")
    monkeypatch.setenv("ARSPEC_STEP", step)
    if rgb:
        spec = arspec.load_spec(ROOT / "specs" / "spatial_lstm_rgb.yaml",
                                overrides=[f"event.shape=[3,{h},{w}]", f"params.hidden={3 * hidden}", "graph.mlp.channels=6"])
    else:
        spec = spec_from(spatial(h, w, hidden, window))
    model = arspec.compile(spec, seed=0).double().eval()
    model.incremental.engine = engine
    assert model.incremental.engine_for(model) == engine
    if label == "C":
        assert "one C step" in model.sampling_path()
    assert cache_disagreement(model, tolerance=1e-9) == ""
    naive = model.sample(2, generator=torch.Generator().manual_seed(3), cache=False)
    assert torch.equal(model.sample(2, generator=torch.Generator().manual_seed(3)), naive)


def test_a_c_lowering_that_drops_a_state_read_is_caught(monkeypatch):
    """Mutation: the C step's state reads pointed at the zero slot (as if the state were never
    carried) make the cache disagree with the training graph."""
    from arspec_torch import ccache, stepplan
    if ccache.compiler() is None:
        pytest.skip("no C compiler here")
    model = arspec.compile(spec_from(spatial(4, 4, 2, 1)), seed=0).double().eval()
    assert cache_disagreement(model, tolerance=1e-9) == ""
    monkeypatch.setattr(stepplan.StepPlan, "state_slots", lambda self, call, offset: np.full(self.positions, self.ring[call.id]))
    mutant = arspec.compile(spec_from(spatial(4, 4, 2, 1)), seed=0).double().eval()
    assert "disagrees" in cache_disagreement(mutant, tolerance=1e-9)


def test_state_reads_that_no_scan_order_computes_and_mismatched_channels_are_refused():
    b = StepBuilder(2, out_channels=4, arg_channels=(1,))
    with pytest.raises(StepError, match="another position"):
        b.state((0, 0))
    b.add(b.state((0, 1)), b.state((0, -1)))                   # right and left: a cycle along the row
    with pytest.raises(StepError, match="point earlier in no raster order"):
        b.finish(len(b.ops) - 1)
    with pytest.raises(StepError, match="different channel counts"):
        b.add(b.read(0, (0, -1)), b.state((0, -1)))


def test_the_scan_order_is_the_raster_order_with_axes_reversed_or_swapped_where_needed():
    assert scan_axes([(0, -1), (-1, 0)], 2) == ((0, 1), (1, 1))             # raster
    assert scan_axes([(0, 1), (-1, 0)], 2) == ((0, 1), (1, -1))             # rows down, columns right to left
    assert scan_axes([(1, 0), (1, 1)], 2) == ((0, 1), (-1, 1))              # rows bottom up
    assert scan_axes([(-1, 1), (1, -1)], 2) is None


def test_a_first_layer_that_reads_its_own_pixel_is_a_located_leak():
    spec = spec_from(spatial().replace("center: false", "center: true"))
    report = arspec.analyze(spec)
    assert not report.ok and report.errors[0].path.startswith("graph.lstm1")


def test_an_engine_that_drops_a_state_read_is_caught_by_the_dynamic_check(monkeypatch):
    spec = spec_from(spatial(4, 4, 2, 1))
    original = declared_module.evaluate

    def forgetful(program, tensors, read, state, *args, **kwargs):
        return original(program, tensors, read, (lambda offset: state(offset) * 0) if state is not None else None, *args, **kwargs)
    monkeypatch.setattr(declared_module, "evaluate", forgetful)
    result = dynamic_check(spec, arspec.compile(spec, seed=0))
    assert not result.agrees and result.missing


def test_the_plugin_is_found_through_its_entry_points():
    from arspec.cli.main import main
    from arspec.primitives.registry import plugin_primitives
    found, broken = plugin_primitives()
    assert found["spatial_lstm"][1] == "arspec-spatial-lstm" and not broken
    assert main(["check", "specs/spatial_lstm.yaml"]) == 0


@pytest.mark.parametrize("path, overrides, says", [
    ("specs/wavenet.yaml", ["event.shape=[64]"], "cached: one C step per position"),
    ("specs/made.yaml", [], "naive: one full pass per step (its output is a dense layer"),
    ("specs/row_lstm.yaml", ["event.shape=[1,6,6]"], "cached: one C step per position"),
    ("specs/diagonal_bilstm.yaml", ["event.shape=[1,6,6]"], "cached: one C step per position"),
    ("specs/transformer_text.yaml", ["event.shape=[16]"], "cached: one C step per position"),
])
def test_sampling_says_how_it_runs_and_why_not_faster(path, overrides, says):
    from arspec_torch import ccache
    if "C step" in says and ccache.compiler() is None:
        pytest.skip("no C compiler here")
    model = arspec.compile(arspec.load_spec(path, overrides=overrides), seed=0)
    assert says in model.sampling_path()


def test_the_rgb_spatial_lstm_follows_r_g_b_and_a_mask_b_first_layer_is_caught():
    """Units in channel groups, a group mask at the pixel itself: measured = derived, the cache
    equal to the graph; reading its own group in the first layer (mask B on x) is a leak."""
    small = ["event.shape=[3,3,4]", "params.hidden=6", "graph.mlp.channels=12"]
    spec = arspec.load_spec(ROOT / "specs" / "spatial_lstm_rgb.yaml", overrides=small)
    assert arspec.analyze(spec).ok
    assert dynamic_check(spec, arspec.compile(spec, seed=0), cache=True).agrees
    wrong = arspec.load_spec(ROOT / "specs" / "spatial_lstm_rgb.yaml", overrides=[*small, "graph.lstm1.mask=B"])
    report = arspec.analyze(wrong)
    assert not report.ok and report.errors[0].path.startswith("graph.lstm1")
