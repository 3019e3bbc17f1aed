"""Parallel WaveNet's student: each inverse autoregressive flow's shift and scale at step t read
only the noise before t (proved statically, measured on the compiled flows), so the student's
Jacobian is triangular and its log-determinant is the sum of its log-scales (checked against the
full Jacobian); a flow that sees the current noise is reported and really breaks both. Density
distillation lowers the KL to a teacher, incompatible teachers are refused with one line, and the
command line trains a teacher, distils a student and samples it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings

import arspec
from arspec.dynamic import dynamic_check
from tests.helpers import problems_of, spec_from, verified
from tests.strategies import examples, flow_students

ROOT = Path(__file__).resolve().parent.parent
STUDENT = ROOT / "specs" / "parallel_wavenet.yaml"
TEACHER = ROOT / "specs" / "wavenet_teacher.yaml"
BROKEN = ROOT / "specs" / "broken" / "parallel_wavenet_flow_sees_current_noise.yaml"
PROPERTY = settings(max_examples=examples(12), deadline=None, suppress_health_check=[HealthCheck.too_slow])


def jacobian(student, z: torch.Tensor, context: dict) -> torch.Tensor:
    """dx/dz of the student's transform for one item, (T, T), in float64."""
    return torch.autograd.functional.jacobian(lambda v: student.transform(v.unsqueeze(0), **context)["x"][0], z)


def _context(student, seed: int = 0) -> dict:
    return {k: v[:1] for k, v in student.example_inputs(1, torch.Generator().manual_seed(seed))[1].items()}


@PROPERTY
@given(flow_students())
def test_every_flow_reads_exactly_the_noise_the_analysis_predicts(text):
    spec = spec_from(text)
    verified(spec)
    student = arspec.compile(spec, seed=0)
    for flow_spec, flow in zip(spec.ir.flow_specs, student.flows):
        result = dynamic_check(flow_spec, flow)
        assert result.agrees, (result.missing[:5], result.unexpected[:5])


@PROPERTY
@given(flow_students())
def test_the_log_determinant_is_the_sum_of_the_log_scales_of_a_triangular_jacobian(text):
    student = arspec.compile(spec_from(text), seed=0).double().eval()
    context = {k: v.double() for k, v in _context(student).items()}
    z = student.noise(1, torch.Generator().manual_seed(1))[0]
    jac = jacobian(student, z, context)
    assert torch.equal(jac, torch.tril(jac))                                   # x_t reads z_<=t only, exactly
    out = student.transform(z.unsqueeze(0), **context)
    assert torch.allclose(torch.diagonal(jac), torch.exp(out["log_scale"][0]))  # dx_t/dz_t = s_tot,t
    assert torch.allclose(torch.linalg.slogdet(jac)[1], out["log_det"][0])
    assert torch.allclose(out["x"], z * torch.exp(out["log_scale"]) + out["mu"])


@PROPERTY
@given(flow_students(shift=False))
def test_a_flow_that_sees_the_current_noise_is_reported_and_breaks_the_log_determinant(text):
    spec = spec_from(text)
    report = arspec.analyze(spec)
    assert report.errors and all(e.path.startswith("parts.flow") and "leak" in e.message for e in report.errors)
    student = arspec.compile(spec, seed=0).double().eval()
    context = {k: v.double() for k, v in _context(student).items()}
    z = student.noise(1, torch.Generator().manual_seed(1))[0]
    jac = jacobian(student, z, context)
    out = student.transform(z.unsqueeze(0), **context)
    # the flow's shift and scale at t now move with z_t: dx_t/dz_t is no longer the product of the scales
    assert not torch.allclose(torch.diagonal(jac), torch.exp(out["log_scale"][0]))


def test_the_zoo_student_states_each_flow_guarantee_and_the_broken_one_is_located():
    report = arspec.analyze(arspec.load_spec(STUDENT))
    assert report.ok and not report.warnings
    assert sum("read only the noise before t" in g for g in report.guarantees) == 4
    assert any("log-determinant is the sum of its flows' log-scales" in g for g in report.guarantees)
    broken = arspec.analyze(arspec.load_spec(BROKEN))
    (error,) = broken.errors
    assert error.path == "parts.flow2.graph.first" and error.location.line == 19


@pytest.mark.parametrize("override, expected", [
    ("parts.flow1.distribution={type: gaussian_mixture, mixtures: 1}", "parts.flow1.distribution: a flow's parameters are a shift and a scale"),
    ("parts.flow2.conditioning.mel.channels=10", "parts.flow2.conditioning: every flow reads the same context as the first"),
    ("latent={shape: [4, 10]}", "latent: a distilled student has no latent map"),
    ("parts.flow3.role=decoder", "parts.flow3.role: a distilled student is made of flows only"),
    ("parts.flow1.ordering={type: random}", "parts.flow1.ordering: a flow transforms its noise in time order"),
])
def test_student_spec_errors_are_located(override, expected):
    problems = problems_of(STUDENT.read_text(), [override])
    assert any(expected in p for p in problems), problems


# -- distillation ------------------------------------------------------------------------------------

TINY_TEACHER = """
    name: teacher
    event: {shape: [16]}
    distribution: {type: discretized_logistic_mixture, classes: 65536, mixtures: 2}
    conditioning: {c: {type: local, channels: 2, upsample: 4}}
    graph:
      past: {op: shift, inputs: [x], by: [1]}
      h:    {op: causal_conv1d, channels: 8, kernel: 2, dilation: 2, activation: tanh, condition: [c]}
      out:  {op: conv1x1, channels: output}
"""
TINY_STUDENT = """
    name: student
    event: {shape: [16]}
    objective: {type: distillation, samples: 2, power: 0, stft: 16}
    parts:
      f1:
        role: flow
        conditioning: {c: {type: local, channels: 2, upsample: 4}}
        graph:
          past: {op: shift, inputs: [x], by: [1]}
          h:    {op: causal_conv1d, channels: 8, kernel: 2, activation: tanh, condition: [c]}
          out:  {op: conv1x1, channels: output}
      f2:
        role: flow
        conditioning: {c: {type: local, channels: 2, upsample: 4}}
        graph:
          past: {op: shift, inputs: [x], by: [1]}
          h:    {op: causal_conv1d, channels: 8, kernel: 2, dilation: 2, activation: tanh, condition: [c]}
          out:  {op: conv1x1, channels: output}
"""


def test_the_kl_terms_are_the_closed_form_entropy_and_the_teachers_cross_entropy():
    teacher = arspec.compile(spec_from(TINY_TEACHER), seed=0).eval()
    student = arspec.compile(spec_from(TINY_STUDENT), seed=0)
    context = {"c": torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(0))}
    terms = student.distillation_terms(teacher, context, generator=torch.Generator().manual_seed(1))
    z = student.noise(3, torch.Generator().manual_seed(1))
    out = student.transform(z, **context)
    assert torch.allclose(terms["entropy"], (out["log_scale"] + 2.0).sum(1))        # logistic entropy: log s + 2
    assert torch.allclose(terms["kl"], terms["cross_entropy"] - terms["entropy"])
    assert torch.allclose(terms["x"], out["x"])


def test_distillation_lowers_the_kl_to_the_teacher():
    torch.manual_seed(0)
    teacher = arspec.compile(spec_from(TINY_TEACHER), seed=3).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    student = arspec.compile(spec_from(TINY_STUDENT), seed=0)
    assert student.teacher_problem(teacher) is None
    context = {"c": torch.randn(16, 2, 4, generator=torch.Generator().manual_seed(0))}
    opt = torch.optim.Adam(student.parameters(), lr=1e-2)

    def kl() -> float:
        with torch.no_grad():
            return float(student.distillation_terms(teacher, context, generator=torch.Generator().manual_seed(7))["kl"].mean())
    before = kl()
    gen = torch.Generator().manual_seed(2)
    for _ in range(60):
        loss = student.distillation_terms(teacher, context, generator=gen)["loss"].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = kl()
    assert after < before - 0.3 * abs(before), (before, after)


def test_a_teacher_reading_class_indices_or_another_context_is_refused():
    from arspec.train.distill import DistillError, check_compatible
    student_spec = spec_from(TINY_STUDENT)
    student = arspec.compile(student_spec, seed=0)
    embedded = spec_from(TINY_TEACHER.replace("past: {op: shift, inputs: [x], by: [1]}",
                                              "past: {op: embedding, inputs: [x], channels: 4, shift: 1}")
                         .replace("classes: 65536, mixtures: 2", "classes: 256, mixtures: 2"))
    with pytest.raises(DistillError, match="reads x through class indices"):
        check_compatible(arspec.compile(embedded, seed=0), student, student_spec)
    other = spec_from(TINY_TEACHER.replace("channels: 2, upsample: 4", "channels: 3, upsample: 4"))
    with pytest.raises(DistillError, match="must read the same"):
        check_compatible(arspec.compile(other, seed=0), student, student_spec)
    categorical = spec_from(TINY_TEACHER.replace("{type: discretized_logistic_mixture, classes: 65536, mixtures: 2}",
                                                 "{type: categorical, classes: 256}"))
    with pytest.raises(DistillError, match="logistic mixture"):
        check_compatible(arspec.compile(categorical, seed=0), student, student_spec)


def test_the_student_samples_in_parallel_what_its_transform_gives():
    student = arspec.compile(arspec.load_spec(STUDENT), seed=0).eval()
    context = {"mel": torch.randn(2, 20, 20)}
    x = student.sample(2, generator=torch.Generator().manual_seed(0), **context)
    z = student.noise(2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(x, student.transform(z, **context)["x"])
    assert x.shape == (2, 4000) and torch.isfinite(x).all()



def multiply_adds_per_sample(model: torch.nn.Module) -> int:
    """Every convolution weight over time is used once per output sample, so their sizes add up to
    the multiply-adds per sample (the context projections, 2-d weights, run at the frame rate)."""
    return sum(p.numel() for p in model.parameters() if p.dim() == 3)


def test_the_zoo_student_costs_under_a_quarter_of_its_teachers_arithmetic_per_sample():
    """The parallel pass beats the teacher's cached steps on a CPU only by doing less arithmetic
    (two cores cannot spread the teacher's over time as a GPU does): the zoo student is half the
    teacher's width with no skip connections, as in the paper."""
    student = arspec.compile(arspec.load_spec(STUDENT), seed=0)
    teacher = arspec.compile(arspec.load_spec(TEACHER), seed=0)
    assert not any("skip" in name for name, _ in student.named_parameters())
    assert 4 * multiply_adds_per_sample(student) < multiply_adds_per_sample(teacher)


# -- the command line -----------------------------------------------------------------------------------

def _arspec(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "arspec", *args], capture_output=True, text=True, cwd=cwd, timeout=900)


@pytest.mark.slow          # about a minute: trains a teacher, distils a student, samples it (make test-all)
def test_train_a_teacher_distil_a_student_and_sample_it_from_the_command_line(tmp_path):
    short = ["--set", "event.shape=[800]"]
    teacher = _arspec("train", str(TEACHER), "--steps", "2", "--batch-size", "4", "--out", str(tmp_path / "teacher"), "--quiet",
                      *short, "--set", "graph.stack.repeat.dilation.times=1", cwd=tmp_path)
    assert teacher.returncode == 0, teacher.stderr
    distilled = _arspec("distill", str(tmp_path / "teacher"), str(STUDENT), "--steps", "2", "--batch-size", "2",
                        "--out", str(tmp_path / "student"), "--quiet", *short, cwd=tmp_path)
    assert distilled.returncode == 0, distilled.stderr
    assert "KL(student || teacher)" in distilled.stdout and "student samples" in distilled.stdout
    for name in ("real.wav", "teacher.wav", "student.wav", "spectrograms.png", "last.safetensors"):
        assert (tmp_path / "student" / name).stat().st_size > 0
    sampled = _arspec("sample", str(tmp_path / "student"), "-n", "2", "-o", str(tmp_path / "s.wav"), "--context-from-data", "test", cwd=tmp_path)
    assert sampled.returncode == 0, sampled.stderr
    assert (tmp_path / "s_0.wav").stat().st_size > 1000
    refused = _arspec("distill", str(tmp_path / "teacher"), str(TEACHER), cwd=tmp_path)
    assert refused.returncode == 2 and "a student spec has parts with role: flow" in refused.stderr
    evaluated = _arspec("eval", str(tmp_path / "student"), cwd=tmp_path)
    assert evaluated.returncode == 2 and "no likelihood of given data" in evaluated.stderr
    assert np.isfinite(float(distilled.stdout.split("KL(student || teacher) ")[1].split()[0]))
