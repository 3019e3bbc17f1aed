"""The C pass of 1-d convolutions (inference, float32): it computes what torch's kernels compute,
its measured dependencies are exactly a causal convolution's footprint, the flows of a student
run through it read exactly the noise the analysis predicts, it stands aside when a gradient is
wanted, and a corrupted C source (a tap that reads the future, a context frame off by one, the
gate's halves swapped, the residual or the bias dropped, a layer's residual read from the wrong
tap) is caught by these same checks."""
from __future__ import annotations

import copy
import mmap
from pathlib import Path

import numpy as np
import pytest
import torch
from arspec_torch import convgroups, cpass, kernels
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import arspec
from arspec.dynamic import generic_parameters, measure_columns, predicted_columns
from tests.helpers import spec_from
from tests.strategies import examples, flow_students

ROOT = Path(__file__).resolve().parent.parent
STUDENT = ROOT / "specs" / "parallel_wavenet.yaml"
TEACHER = ROOT / "specs" / "wavenet_teacher.yaml"
PROPERTY = settings(max_examples=examples(30), deadline=None, suppress_health_check=[HealthCheck.too_slow])

pytestmark = pytest.mark.skipif(cpass.library() is None, reason="no C compiler here: the pass runs in torch")


@st.composite
def conv_cases(draw, max_steps: int = 90):
    """A causal 1-d convolution and its epilogue: plain, gated (with or without a context
    repeated along time) or plus a residual; sizes that cross tiles and register blocks."""
    mode = draw(st.sampled_from(["plain", "gate", "context", "residual", "layer"]))
    factor = draw(st.sampled_from([1, 3, 7, 40])) if mode in ("context", "layer") else 1
    length = factor * draw(st.integers(1, max(1, max_steps // factor)))
    cout = 2 * draw(st.integers(1, 10)) if mode in ("gate", "context", "layer") else draw(st.integers(1, 20))
    return dict(mode=mode, factor=factor, length=length, cout=cout, batch=draw(st.integers(1, 3)),
                cin=draw(st.integers(1, 12)), kernel=draw(st.integers(1, 4)), dilation=draw(st.integers(1, 9)),
                seed=draw(st.integers(0, 1000)))


def _tensors(case: dict) -> dict:
    g = torch.Generator().manual_seed(case["seed"])
    b, t, co = case["batch"], case["length"], case["cout"]
    return {"x": torch.randn(b, case["cin"], t, generator=g), "weight": torch.randn(co, case["cin"], case["kernel"], generator=g),
            "bias": torch.randn(co, generator=g), "context": torch.randn(b, co, t // case["factor"], generator=g),
            "residual": torch.randn(b, co, t, generator=g), "back": torch.randn(case["cin"], max(1, co // 2), 1, generator=g),
            "back_bias": torch.randn(case["cin"], generator=g)}


def in_torch(case: dict, v: dict) -> torch.Tensor:
    """The same computation through the interpreter's kernels."""
    k, d = case["kernel"], case["dilation"]
    h = kernels.masked_conv(v["x"], v["weight"], torch.ones_like(v["weight"]), v["bias"], dilation=(d,),
                            pad_before=(d * (k - 1),), pad_after=(0,), stride=(1,))
    if case["mode"] in ("context", "layer"):
        h = kernels.add_repeated(h, v["context"], factors=(1, case["factor"]))
    if case["mode"] == "layer":
        back = kernels.masked_conv(kernels.gate(h), v["back"], torch.ones_like(v["back"]), v["back_bias"], dilation=(1,),
                                   pad_before=(0,), pad_after=(0,), stride=(1,))
        return back + v["x"]
    if case["mode"] in ("gate", "context"):
        return kernels.gate(h)
    return h + v["residual"] if case["mode"] == "residual" else h


def in_c(case: dict, v: dict) -> torch.Tensor:
    mode = case["mode"]
    return cpass.conv(v["x"], v["weight"], v["bias"], dilation=case["dilation"],
                      context=v["context"] if mode in ("context", "layer") else None, factor=case["factor"],
                      residual=v["residual"] if mode == "residual" else None, gate=mode in ("gate", "context"),
                      back=(v["back"], v["back_bias"]) if mode == "layer" else None)


def footprint_measured(case: dict) -> np.ndarray:
    """(T, T): whether output step t changes when input step s does (every channel, exact zeros)."""
    v = _tensors({**case, "batch": 1})
    t = case["length"]
    with torch.no_grad():
        base = in_c(case, v)
        out = np.zeros((t, t), dtype=bool)
        for s in range(t):
            moved = dict(v, x=v["x"].clone())
            moved["x"][:, :, s] += 1.0
            out[:, s] = (in_c(case, moved) != base).any(dim=1)[0].numpy()
    return out


def footprint_predicted(case: dict) -> np.ndarray:
    """A causal convolution's footprint: step t reads s = t - dilation * m, m < kernel."""
    t, k, d = case["length"], case["kernel"], case["dilation"]
    out = np.zeros((t, t), dtype=bool)
    for m in range(k):
        steps = np.arange(d * m, t)
        out[steps, steps - d * m] = True
    return out


@PROPERTY
@given(conv_cases())
def test_the_c_pass_computes_what_the_torch_kernels_compute(case):
    v = _tensors(case)
    with torch.no_grad():
        expected, got = in_torch(case, v), in_c(case, v)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5 * (1 + case["cin"] * case["kernel"]))


@PROPERTY
@given(conv_cases(max_steps=40))
def test_the_c_pass_reads_exactly_a_causal_convolutions_footprint(case):
    assert np.array_equal(footprint_measured(case), footprint_predicted(case))


def _float32_probe(flow) -> torch.nn.Module:
    probe = copy.deepcopy(flow).float().eval()
    generic_parameters(probe, 0)
    return probe


@settings(max_examples=examples(10), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flow_students())
def test_flows_run_through_the_c_pass_read_exactly_the_noise_the_analysis_predicts(text):
    spec = spec_from(text)
    student = arspec.compile(spec, seed=0)
    for flow_spec, flow in zip(spec.ir.flow_specs, student.flows):
        probe = _float32_probe(flow)
        assert probe.net.groups, "the flow's convolutions form groups for the C pass"
        columns = np.arange(flow_spec.ir.ctx.elements)
        measured = measure_columns(probe, columns, trials=2)
        assert np.array_equal(measured, predicted_columns(flow_spec, columns))


def _group_calls(monkeypatch) -> list[str]:
    ran: list[str] = []
    real = convgroups.run_group

    def counting(group, *args):
        out = real(group, *args)
        if out is not None:
            ran.append(group.output)
        return out
    monkeypatch.setattr("arspec_torch.network.run_group", counting)
    return ran


def _without_groups(model: torch.nn.Module) -> None:
    for net in [m for m in model.modules() if hasattr(m, "groups")]:
        net.groups = {}


def test_the_zoo_student_samples_the_same_with_and_without_the_c_pass(monkeypatch):
    student = arspec.compile(arspec.load_spec(STUDENT, overrides=["event.shape=[1000]"]), seed=0).eval()
    context = {"mel": torch.randn(2, 20, 5, generator=torch.Generator().manual_seed(1))}
    ran = _group_calls(monkeypatch)
    fused = student.sample(2, generator=torch.Generator().manual_seed(0), **context)
    assert len(ran) == 4 + 20 + 4, "each flow's first convolution, residual layers and head ran in the C pass"
    _without_groups(student)
    plain = student.sample(2, generator=torch.Generator().manual_seed(0), **context)
    assert (fused - plain).abs().max() <= 1e-4 * plain.abs().max()       # float32 rounding, through four flows


def test_weights_changed_in_place_reach_the_c_pass():
    student = arspec.compile(arspec.load_spec(STUDENT, overrides=["event.shape=[400]"]), seed=0).eval()
    context = {"mel": torch.randn(1, 20, 2, generator=torch.Generator().manual_seed(1))}
    before = student.sample(1, generator=torch.Generator().manual_seed(0), **context)
    with torch.no_grad():
        for p in student.parameters():
            p.mul_(0.9)                                      # an optimiser step, a loaded state dict
    after = student.sample(1, generator=torch.Generator().manual_seed(0), **context)
    _without_groups(student)
    plain = student.sample(1, generator=torch.Generator().manual_seed(0), **context)
    assert not torch.allclose(before, after)
    assert (after - plain).abs().max() <= 1e-4 * plain.abs().max()


def test_the_zoo_teacher_scores_the_same_with_and_without_the_c_pass(monkeypatch):
    teacher = arspec.compile(arspec.load_spec(TEACHER, overrides=["event.shape=[1000]"]), seed=0).eval()
    x, context = teacher.example_inputs(2, torch.Generator().manual_seed(0))
    ran = _group_calls(monkeypatch)
    with torch.no_grad():
        fused = teacher.log_prob(x, **context)
        assert ran, "the C pass ran"
        _without_groups(teacher)
        plain = teacher.log_prob(x, **context)
    assert torch.allclose(fused, plain, rtol=1e-5, atol=1e-2)


def test_the_c_pass_stands_aside_when_a_gradient_is_wanted(monkeypatch):
    student = arspec.compile(arspec.load_spec(STUDENT, overrides=["event.shape=[200]"]), seed=0)
    ran = _group_calls(monkeypatch)
    z = student.noise(1, torch.Generator().manual_seed(0))
    context = {"mel": torch.randn(1, 20, 1)}
    out = student.transform(z, **context)["x"]
    out.sum().backward()
    assert not ran and all(p.grad is not None for p in student.parameters())
    with torch.no_grad():
        assert torch.allclose(student.transform(z, **context)["x"], out, rtol=1e-4, atol=1e-4)
    assert ran


#: corruptions of the C source, each caught by the checks above
C_MUTANTS = {
    "a tap that reads the future": ("J->dilation * (J->kernel - 1 - j)", "J->dilation * (J->kernel - 2 - j)"),
    "the context's frame off by one": ("float add = ctx[f];", "float add = ctx[f + 1 < frames ? f + 1 : f];"),
    "the gate's halves swapped": ("gated(h[o][i], h[o + half][i])", "gated(h[o + half][i], h[o][i])"),
    "the residual dropped": ("dst[i] = h[o][i] + res[i];", "dst[i] = h[o][i];"),
    "the bias dropped": ("float b0 = bias ? bias[row] : 0.0f;", "float b0 = 0.0f;"),
    "a layer's residual from the wrong tap": ("xin[o * J->kernel + J->kernel - 1]", "xin[o * J->kernel]"),
    "a layer's gate read from the wrong half": ("g[o][i] = gated(h[o][i], h[o + half][i]);", "g[o][i] = gated(h[o + half][i], h[o][i]);"),
}


@pytest.mark.parametrize("mutant", C_MUTANTS, ids=list(C_MUTANTS))
def test_a_corrupted_c_pass_is_caught(mutant, monkeypatch):
    old, new = C_MUTANTS[mutant]
    assert old in cpass.SOURCE
    monkeypatch.setattr(cpass, "SOURCE", cpass.SOURCE.replace(old, new))
    cpass.library.cache_clear()
    try:
        caught = False
        for mode in ("plain", "gate", "context", "residual", "layer"):
            case = dict(mode=mode, factor=5 if mode in ("context", "layer") else 1, length=40, cout=6, batch=2, cin=3, kernel=2, dilation=3, seed=1)
            v = _tensors(case)
            with torch.no_grad():
                wrong_values = not torch.allclose(in_c(case, v), in_torch(case, v), rtol=1e-5, atol=1e-4)
            caught |= wrong_values or not np.array_equal(footprint_measured(case), footprint_predicted(case))
        assert caught
    finally:
        monkeypatch.undo()
        cpass.library.cache_clear()


def test_arspec_pass_torch_keeps_the_calls_in_torch(monkeypatch):
    monkeypatch.setenv("ARSPEC_PASS", "torch")
    cpass.library.cache_clear()
    try:
        assert cpass.library() is None
        ran = _group_calls(monkeypatch)
        student = arspec.compile(arspec.load_spec(STUDENT, overrides=["event.shape=[400]"]), seed=0).eval()
        x = student.sample(1, generator=torch.Generator().manual_seed(0), mel=torch.zeros(1, 20, 2))
        assert x.shape == (1, 400) and not ran
    finally:
        monkeypatch.undo()
        cpass.library.cache_clear()


def test_built_without_openmp_the_pass_computes_the_same_on_one_thread(monkeypatch):
    monkeypatch.setattr(cpass, "torch_runs_libgomp", lambda: False)
    cpass.library.cache_clear()
    try:
        case = dict(mode="context", factor=5, length=200, cout=8, batch=2, cin=4, kernel=2, dilation=3, seed=2)
        v = _tensors(case)
        with torch.no_grad():
            assert torch.allclose(in_c(case, v), in_torch(case, v), rtol=1e-5, atol=1e-4)
    finally:
        monkeypatch.undo()
        cpass.library.cache_clear()


def test_both_c_runtimes_use_the_cpus_own_vector_width():
    """A generic vector wider than the CPU's registers is split by the compiler through memory
    (measured on an AVX2 machine: C steps 6-10x slower, the C pass 14x slower than torch): the
    runtimes use 64-byte vectors only where AVX-512 is there, 32 bytes elsewhere."""
    from arspec_torch import cstep
    if cpass.library() is None:
        pytest.skip("no C compiler here")
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").exists() else []
    if "avx2" not in flags:
        pytest.skip("not an x86 CPU with AVX2")
    native = 64 if "avx512f" in flags else 32
    assert cpass.library().pass_vector_bytes() == native
    assert cstep.runtime(np.dtype(np.float32)).rt_vector_bytes() == native
    assert cstep.lanes(np.dtype(np.float32)) == native // 4 and cstep.lanes(np.dtype(np.float64)) == native // 8


@pytest.mark.parametrize("tuned", [False, True])
def test_large_outputs_have_pages_of_their_own_unless_freed_memory_is_kept(monkeypatch, tuned):
    """A WaveNet forward held 1.4 GB of RSS for 156 MiB of live tensors: the pass's outputs of a
    few megabytes fragmented glibc's heap. Without `tune_allocator`, an output of 1 MiB or more is
    its own mapping (page-aligned, returned when freed), and the values are the same either way."""
    if cpass.library() is None:
        pytest.skip("no C compiler here")
    monkeypatch.setattr(cpass, "allocator_tuned", lambda: tuned)
    x = torch.randn(2, 8, 20000)
    weight, bias = torch.randn(16, 8, 2), torch.randn(16)
    with torch.no_grad():
        got = cpass.conv(x, weight, bias, dilation=4)
        expected = torch.nn.functional.conv1d(torch.nn.functional.pad(x, (4, 0)), weight, bias, dilation=4)
    assert got.numel() * 4 >= cpass.OWN_PAGES
    assert torch.allclose(got, expected, atol=1e-4)
    if not tuned:
        assert got.data_ptr() % mmap.PAGESIZE == 0 and got.untyped_storage().nbytes() == got.numel() * 4
