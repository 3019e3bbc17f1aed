"""Invalid specs: every problem is reported at once, located (file:line:col), with its field path."""
from __future__ import annotations

import os
import textwrap

import pytest

import arspec
from tests.helpers import problems_of, spec_from

VALID = """\
name: tiny
event: {shape: [1, 4, 4]}
distribution: {type: bernoulli}
graph:
  h: {op: masked_conv2d, inputs: [x], channels: 8, kernel: 3, mask: A, activation: relu}
  out: {op: conv1x1, channels: output}
"""

# (spec text, expected problem lines) — the location and message are part of the contract.
BROKEN = [
    ("unknown top-level key", VALID + "colour: red\n",
     ["test.yaml:7:1: colour: unknown key 'colour'"]),
    ("wrong mask letter", VALID.replace("mask: A", "mask: C"),
     ["test.yaml:5:63: graph.h.mask: expected 'A' or 'B', got 'C'"]),
    ("unknown op with suggestion", VALID.replace("op: conv1x1", "op: conv1x2"),
     ["test.yaml:6:9: graph.out.op: unknown op 'conv1x2' (did you mean 'conv1x1'?); expected one of: add, "]),
    ("kernel of the wrong type", VALID.replace("kernel: 3", "kernel: three"),
     ["test.yaml:5:52: graph.h.kernel: expected an integer, got 'three'"]),
    ("even kernel", VALID.replace("kernel: 3", "kernel: 4"),
     ["test.yaml:5:52: graph.h.kernel: masked_conv2d needs odd kernel sizes, got [4, 4]"]),
    ("missing distribution", VALID.replace("distribution: {type: bernoulli}\n", ""),
     ["test.yaml:1:1: distribution: missing required key 'distribution'"]),
    ("unknown distribution", VALID.replace("bernoulli", "poisson"),
     ["test.yaml:3:16: distribution.type: unknown type 'poisson'; expected one of: bernoulli, categorical"]),
    ("negative channels", VALID.replace("channels: 8", "channels: -8"),
     ["test.yaml:5:39: graph.h.channels: must be >= 1, got -8"]),
    ("unknown input node", VALID.replace("inputs: [x]", "inputs: [y]"),
     ["test.yaml:5:26: graph.h.inputs: unknown node 'y'"]),
    ("duplicate key", VALID.replace("  out:", "  h: {op: relu}\n  out:"),
     ["test.yaml:6:3: graph.h: duplicate key 'h' (first at line 5)"]),
    ("YAML syntax error", VALID.replace("graph:\n", "graph: [\n"),
     ["test.yaml:6:3: YAML syntax error: expected ',' or ']'"]),
    ("unsafe python tag", VALID.replace("name: tiny", "name: !!python/object/apply:os.system ['echo pwned']"),
     ["test.yaml:1:7: name: unsupported YAML tag 'tag:yaml.org,2002:python/object/apply:os.system'"]),
    ("event too large", VALID.replace("[1, 4, 4]", "[1000, 1000, 1000]"),
     ["test.yaml:2:9: event.shape: an event of 1,000,000,000 elements is larger than the limit of 16,777,216"]),
    ("billions of parameters", VALID.replace("channels: 8", "channels: 100000").replace("  out:", "  h2: {op: conv1x1, channels: 100000}\n  out:"),
     ["test.yaml:6:21: graph.h2.channels: layer too large: 100,000 channels, 10,000,000,000 weights"]),
    ("output of the wrong size", VALID.replace("channels: output", "channels: 3"),
     ["test.yaml:6:3: graph.out: the output node 'out' has shape [3, 4, 4], but a bernoulli over [1, 4, 4] needs [1, 4, 4] "
      "(1 parameter per element; use channels: output)"]),
    ("residual of the wrong shape", VALID.replace("channels: output}", "channels: output, residual: h}"),
     ["test.yaml:6:40: graph.out.residual: residual 'h' has shape [8, 4, 4], the op produces [1, 4, 4]"]),
    ("unknown block", VALID + "  more: {block: nope}\n",
     ["test.yaml:7:10: graph.more.block: unknown block 'nope' (known: none defined)"]),
    ("unknown parameter reference", VALID.replace("channels: 8", "channels: $width"),
     ["test.yaml:5:39: graph.h.channels: unknown parameter $width"]),
    ("2-d op on a sequence", VALID.replace("[1, 4, 4]", "[16]"),
     ["test.yaml:5:26: graph.h.inputs: masked_conv2d needs a 2-d input or a video (frames of that), got spatial shape [16]"]),
    ("ordering that is not a permutation", VALID.replace("distribution:", "ordering: {type: permutation, order: [0, 1, 1]}\ndistribution:"),
     ["test.yaml:3:1: ordering: order must be a permutation of 0..15 (16 entries), got 3 entries"]),
    ("conditioning that does not divide the event", VALID.replace("[1, 4, 4]", "[10]").replace(
        "graph:", "conditioning:\n  f: {type: local, channels: 2, upsample: 3}\ngraph:"),
     ["test.yaml:5:3: conditioning.f.upsample: event length [10] is not a multiple of upsample 3"]),
]


@pytest.mark.parametrize("label,text,expected", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_spec_is_reported_with_location_and_message(label, text, expected):
    problems = problems_of(text)
    assert problems, f"{label}: accepted"
    for want in expected:
        assert any(want in p for p in problems), f"{label}: {want!r} not in {problems}"


def test_every_problem_is_reported_at_once():
    text = VALID.replace("mask: A", "mask: C").replace("op: conv1x1", "op: nope") + "extra: 1\n"
    problems = problems_of(text)
    assert len(problems) == 3
    assert [p.split(":")[1] for p in problems] == ["5", "6", "7"]


def test_unsafe_tags_never_execute(tmp_path):
    marker = tmp_path / "pwned"
    text = VALID.replace("name: tiny", f"name: !!python/object/apply:os.system ['touch {marker}']")
    assert problems_of(text)
    assert not marker.exists()


def test_alias_bomb_is_rejected_without_expanding():
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, 9):
        prev = chr(ord("a") + i - 1)
        cur = chr(ord("a") + i)
        bomb += f"{cur}: &{cur} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
    problems = problems_of(bomb)
    assert any("alias bomb" in p for p in problems)


def test_spec_error_prints_one_line_per_problem():
    with pytest.raises(arspec.SpecError) as err:
        spec_from(VALID.replace("mask: A", "mask: C"))
    assert str(err.value).count("\n") == 0
    assert str(err.value).startswith("test.yaml:5:63: graph.h.mask:")


def test_overrides_change_the_spec_and_are_validated():
    spec = spec_from(VALID, overrides=["event.shape=[1,6,6]", "graph.h.channels=4"])
    assert spec.event.shape == [1, 6, 6]
    assert spec.ir.node("h").spec.channels == 4
    problems = problems_of(VALID, overrides=["graph.h.mask=Z"])
    assert problems == ["--set graph.h.mask=Z:1:1: graph.h.mask: expected 'A' or 'B', got 'Z'"]
    assert problems_of(VALID, overrides=["no-equals-sign"])[0].endswith("an override must look like key.path=value")


def test_overrides_reach_into_repeats_and_params():
    text = textwrap.dedent("""\
        name: w
        event: {shape: [32]}
        distribution: {type: categorical, classes: 4}
        params: {width: 8}
        graph:
          embed: {op: embedding, inputs: [x], channels: $width, shift: 1}
          stack: {op: causal_conv1d, channels: $width, kernel: 2, residual: in, repeat: {dilation: {cycle: [1, 2, 4], times: 3}}}
          out: {op: conv1x1, channels: output}
        """)
    spec = spec_from(text, overrides=["graph.stack.repeat.dilation.times=2", "params.width=4"])
    names = [n.name for n in spec.ir.op_nodes()]
    assert names.count("out") == 1 and sum(n.startswith("stack[") for n in names) == 6
    assert spec.ir.node("embed").type.channels == 4


def test_load_spec_reports_missing_file_cleanly(tmp_path):
    with pytest.raises(arspec.SpecError) as err:
        arspec.load_spec(tmp_path / "missing.yaml")
    assert "cannot read the spec" in str(err.value)
    assert not os.path.exists(tmp_path / "missing.yaml")


def test_yaml_scalars_resolve_exactly_as_the_yaml_1_1_safe_loader_does():
    import math

    import yaml

    from arspec.errors import Problems
    from arspec.spec.yaml_source import load_yaml
    text = "values: [017, 1:30, 0x10, 0b101, +12_000, .inf, -.inf, 3.5e2, 1:30.5, yes, off, ~, 2001-12-14, '017', 0o17]\n"
    problems = Problems()
    ours, _ = load_yaml(text, "t.yaml", problems)
    theirs = yaml.safe_load(text)
    assert not problems
    assert ours == theirs
    assert ours["values"][:5] == [15, 90, 16, 5, 12000] and math.isinf(ours["values"][5])
    spec = spec_from(VALID.replace("channels: 8", "channels: 0x10"))
    assert spec.ir.node("h").spec.channels == 16
