"""Multiscale PixelCNN (Reed et al. 2017): the resolution ops, their errors, and parallel sampling
in O(log N) steps."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
from arspec_torch.kernels import depth_to_space, space_to_depth

import arspec
from tests.helpers import problems_of, spec_from

ROOT = Path(__file__).resolve().parent.parent

PYRAMID = """\
name: pyramid
event: {shape: [1, 8, 8]}
distribution: {type: bernoulli}
ordering: {type: multiscale, base: 2}
graph:
  g8:   {op: space_to_depth, inputs: [x], factor: 2}
  x4:   {op: select_groups, inputs: [g8], groups: 4, keep: [0]}
  g4:   {op: space_to_depth, inputs: [x4], factor: 2}
  x2:   {op: select_groups, inputs: [g4], groups: 4, keep: [0]}
  b:    {op: masked_conv2d, inputs: [x2], channels: 4, kernel: 3, mask: A, activation: tanh}
  base: {op: conv1x1, channels: output, mask: B}
  u4:   {op: group_masked_conv2d, inputs: [g4], groups: 4, mask: A, kernel: 3, channels: 8, activation: tanh}
  p4:   {op: group_masked_conv2d, groups: 4, mask: B, kernel: 1, channels: output}
  n4:   {op: select_groups, groups: 4, keep: [1, 2, 3]}
  o4:   {op: depth_to_space, inputs: [base, n4], factor: 2}
  u8:   {op: group_masked_conv2d, inputs: [g8], groups: 4, mask: A, kernel: 3, channels: 8, activation: tanh}
  p8:   {op: group_masked_conv2d, groups: 4, mask: B, kernel: 1, channels: output}
  n8:   {op: select_groups, groups: 4, keep: [1, 2, 3]}
  o8:   {op: depth_to_space, inputs: [o4, n8], factor: 2}
"""


def test_space_to_depth_puts_each_sub_position_in_its_own_channel_group_and_inverts():
    x = torch.arange(2 * 4 * 4).reshape(1, 2, 4, 4)
    folded = space_to_depth(x, factor=2)
    assert folded.shape == (1, 8, 2, 2)
    # channel c*4 + g holds sub-position g (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right)
    assert torch.equal(folded[0, 0], x[0, 0, 0::2, 0::2])
    assert torch.equal(folded[0, 1], x[0, 0, 0::2, 1::2])
    assert torch.equal(folded[0, 2], x[0, 0, 1::2, 0::2])
    assert torch.equal(folded[0, 7], x[0, 1, 1::2, 1::2])
    assert torch.equal(depth_to_space(folded, factor=2, counts=(4,)), x)


def test_a_pyramid_is_autoregressive_and_its_module_matches_the_prediction():
    spec = spec_from(PYRAMID)
    report = arspec.analyze(spec)
    assert report.ok and not report.warnings, [str(p) for p in report.errors + report.warnings]
    model = arspec.compile(spec, seed=0)
    from arspec.dynamic import dynamic_check
    assert dynamic_check(spec, model).agrees


def test_sampling_takes_one_network_pass_per_step_not_per_pixel():
    spec = arspec.load_spec(ROOT / "specs" / "multiscale_pixelcnn.yaml")
    model = arspec.compile(spec, seed=0)
    assert len(model.steps()) == 7 * 7 + 2 * 3
    calls = []
    model.net.register_forward_hook(lambda *_: calls.append(1))
    samples = model.sample(2, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (2, 1, 28, 28) and len(calls) == 55
    assert torch.isfinite(model.log_prob(samples)).all()


def test_completion_keeps_the_coarse_image_and_fills_in_the_finer_scales():
    spec = spec_from(PYRAMID)
    model = arspec.compile(spec, seed=0)
    given = torch.randint(0, 2, (1, 1, 8, 8))
    known = torch.zeros(1, 8, 8, dtype=torch.bool)
    known[:, ::4, ::4] = True                      # the 2x2 base image, generated first
    out = model.sample(3, generator=torch.Generator().manual_seed(0), given=given, known=known)
    assert torch.equal(out[:, :, ::4, ::4], given[:, :, ::4, ::4].expand(3, 1, 2, 2))


def _problem(text: str) -> list[str]:
    return problems_of(textwrap.dedent(text))


@pytest.mark.parametrize("edit,expected", [
    (("factor: 2}\n  x4", "factor: 3}\n  x4"), "graph.g8.factor: space_to_depth with factor 3 needs spatial sizes divisible by it, got [8, 8]"),
    (("keep: [1, 2, 3]}\n  o4", "keep: [1, 2, 4]}\n  o4"), "graph.n4.keep: keep must list distinct groups in 0..3, got [1, 2, 4]"),
    (("inputs: [base, n4]", "inputs: [n4, n4, base, base]"), "graph.o4.inputs: each input must hold whole groups of 2 channels, got [3, 3, 1, 1]"),
    (("inputs: [base, n4]", "inputs: [base, u4]"), "graph.o4.inputs: depth_to_space with factor 2 needs channels divisible by 4, got 9"),
    (("channels: 8, activation: tanh}\n  p4", "channels: 6, activation: tanh}\n  p4"), "graph.u4.channels: 6 output channels do not split into 4 groups"),
    (("g8:   {op: space_to_depth, inputs: [x], factor: 2}", "wide: {op: conv1x1, inputs: [x], channels: 300000}\n  g8:   {op: space_to_depth, factor: 2}"),
     "graph.g8.factor: space_to_depth would make 1,200,000 channels (limit 1,000,000)"),
])
def test_resolution_mistakes_are_located_shape_errors(edit, expected):
    problems = _problem(PYRAMID.replace(*edit))
    assert any(expected in p for p in problems), problems
    assert all(p.startswith("test.yaml:") for p in problems)


def test_a_large_multiscale_model_is_verified_with_offsets_and_probed_at_a_smaller_consistent_size():
    from tests.test_cli import run
    result = run("check", "--dynamic", "--json", "specs/multiscale_pixelcnn.yaml", "--set", "event.shape=[1,448,448]", "--set", "ordering.base=112")
    assert result.returncode == 0, result.stdout + result.stderr
    (report,) = json.loads(result.stdout)
    assert report["domain"] == "offsets" and report["ok"]
    side = report["dynamic"]["event"][1]
    assert side < 448 and side % 4 == 0                # two doublings kept: base = side / 4
    assert report["dynamic"]["agrees"]
