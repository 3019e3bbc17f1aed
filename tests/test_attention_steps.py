"""Attention and layer norm lowered from their declared steps (`Attend.step`, `ChannelNorm.step`):
every engine — the C step, the numpy step, the static program the accelerators run — keeps the
keys and values of the whole event and reads, at each position, exactly the tokens the pattern
allows; cached sampling equals the training graph and naive sampling, and a step that reads one
key too few or too many, or drops the mask, is caught."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from arspec_torch import cstep, keyhistory, stepplan
from hypothesis import HealthCheck, assume, given, settings

import arspec
from arspec.dynamic import generic_parameters
from tests.helpers import spec_from
from tests.strategies import attention_stacks, examples

ROOT = Path(__file__).resolve().parent.parent
ZOO = [("transformer_text.yaml", "[10]"), ("pixelsnail.yaml", "[1,5,5]"), ("pixelsnail.yaml", "[3,3,3]")]
ENGINES = ["c", "numpy", "static"]


def _model(spec, engine: str, monkeypatch):
    """float64 with non-zero biases everywhere, sampling through `engine`."""
    if engine == "c" and not cstep.c_step_available(np.dtype(np.float64)):
        pytest.skip("no C compiler here: the numpy step runs")
    monkeypatch.setenv("ARSPEC_STEP", "numpy" if engine == "numpy" else "c")
    model = arspec.compile(spec, seed=0, dtype=torch.float64).eval()
    generic_parameters(model, 0, spec.ir)
    assert model.incremental is not None and model.incremental.plan is not None, model.incremental.plan_missing
    model.incremental.engine = "static" if engine == "static" else "plan"
    return model


def _teacher_forcing_matches(model) -> bool:
    x, _ = model.example_inputs(2, torch.Generator().manual_seed(3))
    with torch.no_grad():
        return torch.allclose(model.incremental.teacher_forced(model, x), model(x), atol=1e-9, rtol=1e-9)


def _sampling_matches(model) -> bool:
    fast = model.sample(2, generator=torch.Generator().manual_seed(4), cache=True)
    slow = model.sample(2, generator=torch.Generator().manual_seed(4), cache=False)
    return torch.equal(fast, slow)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name,shape", ZOO, ids=[f"{n} {s}" for n, s in ZOO])
def test_zoo_attention_models_sample_through_every_step_engine_as_the_graph_says(name, shape, engine, monkeypatch):
    model = _model(arspec.load_spec(ROOT / "specs" / name, overrides=[f"event.shape={shape}"]), engine, monkeypatch)
    said = model.incremental.describe(model)
    assert said == {"c": "cached: one C step per position", "static": "cached: the static step program on the device"}.get(engine, said)
    assert _teacher_forcing_matches(model) and _sampling_matches(model)


@settings(max_examples=examples(36), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=attention_stacks(raster=True))
def test_random_attention_stacks_sample_through_every_engine_as_the_graph_says(source):
    """Strict, non-strict and unmasked attention, windows, strides, chunks, grouped and pixel
    tokens, layer norms per channel group, keys with learned positions and the raw input."""
    spec = spec_from(source)
    assume(arspec.analyze(spec).ok)                        # unmasked attention over the data is a leak, not a model
    planned = arspec.compile(spec, seed=0).incremental
    if planned.plan is None:
        # the plan's lags count an attention's query as read even where no position has two keys
        # (so its scores never matter: a leaking layer below it is harmless): the torch path serves it
        assert "not final" in planned.plan_missing, planned.plan_missing
        model = arspec.compile(spec, seed=0, dtype=torch.float64).eval()
        generic_parameters(model, 0, spec.ir)
        assert model.incremental.engine_for(model) == "torch"
        assert _teacher_forcing_matches(model) and _sampling_matches(model)
    else:
        with pytest.MonkeyPatch.context() as monkeypatch:
            for engine in ENGINES:
                if engine == "c" and not cstep.c_step_available(np.dtype(np.float64)):
                    continue
                model = _model(spec, engine, monkeypatch)
                assert _teacher_forcing_matches(model), engine
                assert _sampling_matches(model), engine


def _mutate_history(monkeypatch, how: str) -> None:
    """KeyHistory, corrupted after it is built: what every engine reads its keys through."""
    built = keyhistory.KeyHistory.__init__

    def init(self, *args, **kwargs):
        built(self, *args, **kwargs)
        some = self.hi > self.lo
        if how == "the latest key missed":
            self.hi = np.where(some, self.hi - 1, self.hi)
            self.masks = [None if m is None else m[:, :-1] for m in self.masks]
        elif how == "the earliest key missed":
            self.lo = np.where(some, self.lo + 1, self.lo)
            self.masks = [None if m is None else m[:, 1:] for m in self.masks]
        else:                                                        # the mask dropped: every token in the range
            self.masks = [None] * len(self.masks)
    monkeypatch.setattr(keyhistory.KeyHistory, "__init__", init)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("how", ["the latest key missed", "the earliest key missed", "the mask dropped"])
def test_an_attention_step_reading_the_wrong_keys_is_caught(how, engine, monkeypatch):
    """Grouped tokens (R, G, B at a position see only earlier groups) for the mask; strict
    attention for the range."""
    spec = arspec.load_spec(ROOT / "specs" / "pixelsnail.yaml", overrides=["event.shape=[3,3,3]"])
    assert _teacher_forcing_matches(_model(spec, engine, monkeypatch))
    _mutate_history(monkeypatch, how)
    assert not _teacher_forcing_matches(_model(spec, engine, monkeypatch))


C_MUTANTS = {
    "scores without the 1/sqrt(d) scale": ("((s0 + s1) + (s2 + s3)) * scale;", "((s0 + s1) + (s2 + s3));"),
    "a score whose fourth chain subtracts": ("s3 += (double)", "s3 -= (double)"),
    "a norm without its eps": ("var / (double)per + 1e-5", "var / (double)per"),
    "a norm over every channel, groups ignored": ("for (idx c = g; c < width; c += groups) mean += x[c];",
                                                   "for (idx c = 0; c < width; c++) mean += x[c] / groups;"),
}


@pytest.mark.parametrize("mutant", C_MUTANTS, ids=list(C_MUTANTS))
def test_a_corrupted_c_attention_or_norm_is_caught(mutant, monkeypatch):
    old, new = C_MUTANTS[mutant]
    name, shape = ("pixelsnail.yaml", "[3,3,3]") if "groups" in mutant else ("transformer_text.yaml", "[10]")
    spec = arspec.load_spec(ROOT / "specs" / name, overrides=[f"event.shape={shape}"])
    if "groups" in mutant:                    # PixelSNAIL has no norm: one per channel group before its head
        spec = spec_from(SPEC_WITH_GROUPED_NORM)
    model = _model(spec, "c", monkeypatch)
    assert _teacher_forcing_matches(model)
    assert old in cstep.RUNTIME
    monkeypatch.setattr(cstep, "RUNTIME", cstep.RUNTIME.replace(old, new))
    assert not _teacher_forcing_matches(_model(spec, "c", monkeypatch))


SPEC_WITH_GROUPED_NORM = """
name: grouped_norm
event: {shape: [3, 3, 3]}
distribution: {type: categorical, classes: 4}
graph:
  l0:  {op: masked_conv2d, inputs: [x], channels: 6, kernel: 3, mask: A, activation: tanh}
  n:   {op: layer_norm}
  out: {op: conv1x1, channels: output, mask: B}
"""


def test_without_c_instructions_for_an_operation_the_numpy_step_runs_and_says_so(monkeypatch):
    spec = arspec.load_spec(ROOT / "specs" / "transformer_text.yaml", overrides=["event.shape=[10]"])
    monkeypatch.setattr(cstep, "C_STEP_OPS", cstep.C_STEP_OPS - {"attend"})
    model = _model(spec, "c", monkeypatch)
    assert model.incremental.describe(model) == "cached: the numpy step per position (the C step has no instructions for attend)"
    assert type(model.incremental._program(model, 2, {}, record=False)) is stepplan.StepProgram
    assert _teacher_forcing_matches(model) and _sampling_matches(model)


@settings(max_examples=examples(15), deadline=None)
@given(source=attention_stacks(raster=True))
def test_the_key_history_built_a_few_positions_at_a_time_is_the_one_built_at_once(source):
    """KeyHistory builds the allowed-token table in blocks of query positions (memory bounded at
    any size): blocks of one and two positions give the same ranges and masks as one block."""
    model = arspec.compile(spec_from(source), seed=0)
    plan_calls = [c for c in model.net.calls if c.step is not None and keyhistory.attention_op(c, model.internal_shape[0])]
    assume(plan_calls)
    internal = tuple(model.internal_shape)
    histories = []
    for block in (1 << 22, 1, 2 * internal[0] ** 2 * int(np.prod(internal[1:]))):
        with pytest.MonkeyPatch.context() as monkeypatch:
            monkeypatch.setattr(keyhistory.KeyHistory, "BLOCK", block)
            histories.append([keyhistory.history_of(c, internal[0], internal[1:]) for c in plan_calls])
    for whole, *parts in zip(*histories):
        for part in parts:
            assert np.array_equal(whole.lo, part.lo) and np.array_equal(whole.hi, part.hi) and whole.latest == part.latest
            assert all((a is None and b is None) or np.array_equal(a, b) for a, b in zip(whole.masks, part.masks))
