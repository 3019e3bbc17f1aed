"""Leak messages point at the bug: the edge that introduces the forbidden dependency, on its own
line, with a hint for the classic cause, once per place (not once per repeat of a block); every
example they print is a real leak."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import arspec
from arspec.analysis import report as report_module

ROOT = Path(__file__).resolve().parent.parent


def _errors(text: str, overrides=()) -> list:
    return arspec.analyze(arspec.parse_spec(text, filename="user.yaml", overrides=list(overrides))).errors


def _zoo_with(name: str, old: str, new: str) -> str:
    text = (ROOT / "specs" / name).read_text()
    assert old in text
    return text.replace(old, new)


def _affected(report) -> int:
    """The 'N element(s) affected' figure of a report's first error."""
    return int(report.errors[0].message.split(" element(s) affected")[0].rsplit("(", 1)[1])


def _line_of(text: str, fragment: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if fragment in line)


def test_a_made_residual_is_blamed_on_the_residual_field_of_the_layer_it_joins():
    text = _zoo_with("made.yaml", "activation: relu, seed: 2}", "activation: relu, seed: 2, residual: h1}")
    (error,) = _errors(text, ["params.hidden=48"])
    assert error.path == "graph.h2" and error.location.line == _line_of(text, "h2:")
    assert error.location.column == text.splitlines()[error.location.line - 1].index("residual") + 1
    assert "through its residual 'h1'" in error.message and "its input 'h1'" not in error.message
    assert "hint: the residual adds values" in error.message


def test_a_vertical_shift_on_the_wrong_axis_is_named_with_its_line_once_for_all_repeats():
    text = _zoo_with("gated_pixelcnn.yaml", "v_down: {op: shift, inputs: [v_conv], by: [1, 0]}",
                     "v_down: {op: shift, inputs: [v_conv], by: [0, 1]}")
    errors = _errors(text, ["params.channels=4", "params.double=8", "event.shape=[1,12,12]"])
    assert len(errors) == 1                                  # the block repeats 5 times
    (error,) = errors
    assert error.path == "blocks.gated.graph.h_sum"
    assert f"the shift by [0, 1] of 'stack[0].v_down' (line {_line_of(text, 'v_down:')}) should be [1, 0]" in error.message
    assert "stack[0].v_down (line" in error.message.split("path:")[1]     # the culprit is on the printed path


def test_a_mirrored_lstm_shifted_sideways_is_blamed_on_the_shift():
    text = _zoo_with("diagonal_bilstm.yaml", "by: [1, 0]", "by: [0, 1]")
    (error,) = _errors(text, ["params.hidden=4", "event.shape=[1,10,10]"])
    assert error.path == "blocks.bilstm.graph.both"
    assert "the shift by [0, 1] of 'stack[0].down'" in error.message and "should be [1, 0]" in error.message


@pytest.mark.parametrize("spec, hint", [
    ("mask_b_first_layer.yaml", "needs mask A"),
    ("wavenet_same_padding.yaml", "use padding: causal"),
    ("mask_b_off_by_one.yaml", "use padding: causal"),
    ("wavenet_no_input_shift.yaml", "give it shift: 1"),
    ("rgb_group_mismatch.yaml", "the channel-group rule"),
    ("rgb_unmasked_1x1.yaml", "needs a channel-group mask"),
    ("gated_no_vertical_shift.yaml", "shift it by [1, 0]"),
    ("bilstm_no_shift.yaml", "shift it by [1, 0]"),
    ("multiscale_merge_order.yaml", "check the order of its inputs"),
    ("coupled_likelihood_channel_masks.yaml", "channel_groups: 1"),
])
def test_each_classic_bug_gets_its_hint_in_one_message(spec, hint):
    report = arspec.analyze(arspec.load_spec(ROOT / "specs" / "broken" / spec))
    assert len(report.errors) == 1, [e.message for e in report.errors]
    assert f"hint: {hint}" in report.errors[0].message or hint in report.errors[0].message.split("hint:")[1]
    assert report.leaks and report.leaks[0]["culprit"] in report.errors[0].message


def _shifted_away_and_back(away: int, back: int) -> str:
    """A 4,096-step sequence model whose embedding is shifted by `away` and then by `back`."""
    return f"""\
name: away_and_back
event: {{shape: [4096]}}
distribution: {{type: categorical, classes: 4}}
graph:
  embed: {{op: embedding, inputs: [x], channels: 4, shift: 1}}
  away:  {{op: shift, inputs: [embed], by: [{away}]}}
  back:  {{op: shift, inputs: [away], by: [{back}]}}
  out:   {{op: conv1x1, inputs: [back], channels: output}}
"""


def test_a_shift_far_off_the_event_and_back_reads_nothing_ahead():
    text = _shifted_away_and_back(-5000, 4998)
    assert _errors(text) == []
    model = arspec.compile(arspec.parse_spec(text), seed=0).double().eval()
    from arspec.dynamic import measure_columns
    assert not measure_columns(model, np.array([0, 2, 4095])).any()     # the module reads nothing either


def test_a_shift_back_short_of_its_start_leaks_exactly_where_the_module_does():
    text = _shifted_away_and_back(-3000, 2999)
    (error,) = _errors(text)
    # back[t] = x[t] for 2999 <= t < 4095: 1,096 elements read themselves
    assert "1096 element(s) affected" in error.message and "element t=2999 (step 2999) reads itself" in error.message
    assert "[1, 4096]" not in error.message
    from arspec.dynamic import measure_columns
    model = arspec.compile(arspec.parse_spec(text), seed=0).double().eval()
    measured = measure_columns(model, np.array([2998, 2999, 4095]))
    assert [np.nonzero(measured[:, k])[0].tolist() for k in range(3)] == [[], [2999], []]


def test_offset_domain_counts_and_examples_agree_with_the_exact_domain(monkeypatch):
    text = _zoo_with("diagonal_bilstm.yaml", "by: [1, 0]", "by: [0, 1]")
    overrides = ["params.hidden=4", "event.shape=[1,48,48]"]
    large = arspec.analyze(arspec.parse_spec(text, overrides=overrides))
    monkeypatch.setattr(report_module, "CONCRETE_LIMIT", 10 ** 6)
    exact = arspec.analyze(arspec.parse_spec(text, overrides=overrides))
    assert large.domain == "offsets" and exact.domain == "concrete"
    assert _affected(large) == _affected(exact) == 48 * 47
    target, source = large.leaks[0]["target"], large.leaks[0]["source"]
    assert exact.dependencies[target, source]                           # the printed example is a real leak


def test_nodes_that_never_reach_the_output_get_a_warning():
    text = """\
name: unused
event: {shape: [1, 6, 6]}
distribution: {type: bernoulli}
graph:
  h1:    {op: masked_linear, inputs: [x], features: 16, seed: 1}
  extra: {op: masked_linear, inputs: [h1], features: 16, seed: 3}
  out:   {op: masked_linear, inputs: [h1], features: output}
"""
    report = arspec.analyze(arspec.parse_spec(text, filename="user.yaml"))
    assert report.ok
    (warning,) = [w for w in report.warnings if "unused" in w.message]
    assert warning.path == "graph.extra" and warning.location.line == 6 and "unused node" in warning.message


def test_the_last_vertical_stack_of_a_gated_pixelcnn_is_not_reported_unused():
    report = arspec.analyze(arspec.load_spec(ROOT / "specs" / "gated_pixelcnn.yaml"))
    assert not any("unused" in w.message for w in report.warnings)


def test_messages_never_show_the_internal_shape_of_a_sequence():
    (error,) = _errors((ROOT / "specs" / "broken" / "wavenet_same_padding.yaml").read_text())
    assert "t=" in error.message and "[1, " not in error.message
