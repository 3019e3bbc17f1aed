"""PixelRNN's Diagonal LSTM declared by its step (`arspec.primitives.recurrence.DiagonalLstm`): the
whole-tensor kernel that trains it (the step scanned along its wavefronts) equals the step
evaluated one position at a time along its scan order, values and gradients, in both directions;
the mirrored direction reads its state to the right, so the engines compute it along a scan order
with the columns reversed — a row once the row is complete — and cached generation agrees with
the training graph and the naive sampler; the skewed scan of before (state running on outside the
image) and an engine that scans the mirrored row left to right are caught."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from arspec_torch import cache as cache_module
from arspec_torch.declared import declared, evaluate, inside_flags, scan_order, tap_table, wavefronts
from arspec_torch.kernels import KERNELS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arspec.dynamic import cache_disagreement
from arspec.primitives.recurrence import DiagonalLstm
from tests.helpers import compiled_for_engine, engines_here, spec_from
from tests.strategies import examples, recurrent_stacks


def _parameters(hidden: int, seed: int, batch: int, height: int, width: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    tensors = {"gate_bias": torch.randn(4 * hidden, generator=generator, dtype=torch.float64),
               "state_weight": torch.randn(4 * hidden, hidden, 2, generator=generator, dtype=torch.float64) / 2,
               "state_bias": torch.randn(4 * hidden, generator=generator, dtype=torch.float64)}
    return torch.randn(batch, 4 * hidden, height, width, generator=generator, dtype=torch.float64), tensors


def _one_position_at_a_time(cell: DiagonalLstm, pre: torch.Tensor, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """The declared step at one position at a time, along the cell's scan order."""
    spatial, program = tuple(pre.shape[2:]), cell.program
    positions = int(np.prod(spatial))
    source = torch.cat([pre.reshape(*pre.shape[:2], -1), pre.new_zeros(*pre.shape[:2], 1)], dim=2)
    out = pre.new_zeros(pre.shape[0], 2 * cell.hidden, positions + 1)
    for p in scan_order(cell.state_taps, spatial).tolist():
        at = torch.tensor([p])
        out[:, :, at] = evaluate(program, tensors, lambda arg, off, at=at: source[:, :, tap_table(off, spatial)[at]],
                                 lambda off, at=at: out[:, :, tap_table(off, spatial)[at]],
                                 inside=lambda off, at=at: inside_flags(off, spatial, at, pre.dtype))
    return out[:, :, :-1].reshape(pre.shape[0], -1, *spatial)


@settings(max_examples=examples(20), deadline=None)
@given(hidden=st.integers(1, 3), mirror=st.booleans(), height=st.integers(1, 5), width=st.integers(1, 6),
       batch=st.integers(1, 2), seed=st.integers(0, 1000))
def test_the_training_kernel_equals_the_step_one_position_at_a_time(hidden, mirror, height, width, batch, seed):
    cell = DiagonalLstm(hidden, mirror)
    pre, tensors = _parameters(hidden, seed, batch, height, width)
    assert "diagonal_lstm" not in KERNELS                          # the model trains through the declared kernel
    assert torch.allclose(declared(pre, program=cell.program, **tensors), _one_position_at_a_time(cell, pre, tensors), atol=1e-12)


@pytest.mark.parametrize("mirror", [False, True])
def test_the_training_kernels_gradients_are_the_steps(mirror):
    cell = DiagonalLstm(1, mirror)
    pre, tensors = _parameters(1, 0, 1, 3, 3)
    inputs = (pre.requires_grad_(), *(t.requires_grad_() for t in tensors.values()))
    names = tuple(tensors)
    assert torch.autograd.gradcheck(lambda p, *ts: declared(p, program=cell.program, **dict(zip(names, ts))), inputs)


def test_the_mirrored_cell_reads_to_the_right_and_its_row_is_scanned_right_to_left():
    cell = DiagonalLstm(2, mirror=True)
    assert set(cell.state_taps) == {(-1, 0), (0, 1)}
    fronts = [f.tolist() for f in wavefronts(cell.state_taps, (2, 3))]
    assert fronts == [[2], [1, 5], [0, 4], [3]]               # (0,2) first; (1,0) last
    order = scan_order(cell.state_taps, (2, 3)).tolist()
    assert order.index(2) < order.index(1) < order.index(0) and order.index(5) < order.index(3)


def _skewed_scan_of_before(pre, gate_bias, state_weight, state_bias):
    """PixelRNN's skewed scan as arspec ran it before the declaration: the state runs on outside
    the image (driven by the state bias) and is read at the left border."""
    b, _, height, width = pre.shape
    pre = pre + gate_bias.view(1, -1, 1, 1)
    skewed = pre.new_zeros(b, pre.shape[1], height, width + height - 1)
    for i in range(height):
        skewed[:, :, i, i:i + width] = pre[:, :, i]
    h = pre.new_zeros(b, state_weight.shape[1], height)
    c, states = torch.zeros_like(h), []
    for j in range(skewed.shape[-1]):
        o, f, i, g = (skewed[:, :, :, j] + (torch.nn.functional.conv1d(torch.nn.functional.pad(h, (1, 0)), state_weight, state_bias)
                                            if j else 0)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        states.append(torch.cat([h, c], dim=1))
    out = torch.stack(states, dim=3)
    return torch.stack([out[:, :, i, i:i + width] for i in range(height)], dim=2)


def test_a_kernel_whose_state_runs_on_outside_the_image_is_caught():
    """Mutation: the skewed scan of before differs from the declared step (zero state outside)."""
    cell = DiagonalLstm(2)
    pre, tensors = _parameters(2, 0, 1, 4, 3)
    step = _one_position_at_a_time(cell, pre, tensors)
    assert torch.allclose(declared(pre, program=cell.program, **tensors), step, atol=1e-12)
    assert not torch.allclose(_skewed_scan_of_before(pre, **tensors), step, atol=1e-6)


def _diagonal_stack(direction: str, groups: int = 1) -> str:
    shift = "  d: {op: shift, inputs: [b], by: [1, 0]}\n  s: {op: add, inputs: [d, l0]}\n" if direction == "right" else \
        "  s: {op: add, inputs: [b, l0]}\n"
    dist = "{type: bernoulli}" if groups == 1 else "{type: categorical, classes: 3}"
    return (f"name: d\nevent: {{shape: [{groups}, 4, 5]}}\ndistribution: {dist}\ngraph:\n"
            f"  l0: {{op: masked_conv2d, inputs: [x], channels: {2 * groups}, kernel: 3, mask: A}}\n"
            f"  b: {{op: diagonal_lstm, inputs: [l0], hidden: {2 * groups}, direction: {direction}}}\n"
            + shift + "  out: {op: conv1x1, inputs: [s], channels: output, mask: B}\n")


@pytest.mark.parametrize("groups", [1, 2])
def test_a_left_diagonal_lstm_samples_through_every_engine_as_the_graph_says(groups):
    spec = spec_from(_diagonal_stack("left", groups))
    with pytest.MonkeyPatch.context() as monkeypatch:
        for engine in engines_here():
            model = compiled_for_engine(spec, engine, monkeypatch)
            assert model.incremental.plan is not None, model.incremental.plan_missing
            assert cache_disagreement(model, tolerance=1e-9) == "", engine
            fast = model.sample(2, generator=torch.Generator().manual_seed(4), cache=True)
            assert torch.equal(fast, model.sample(2, generator=torch.Generator().manual_seed(4), cache=False)), engine


@settings(max_examples=examples(10), deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(source=recurrent_stacks().filter(lambda text: "diagonal_lstm" in text))
def test_random_diagonal_bilstm_stacks_sample_through_every_engine_as_the_graph_says(source):
    """The mirrored direction a row at a time, right to left, at the step its last pixel is drawn
    (the C step, the numpy step and the static program, which runs the row's positions at every
    step and writes them to its scratch slot until the row is due; the torch path along its scan
    order): teacher forcing equals the graph and cached samples equal naive ones. With
    channel groups the plans step aside and say why."""
    spec = spec_from(source)
    with pytest.MonkeyPatch.context() as monkeypatch:
        for engine in engines_here():
            model = compiled_for_engine(spec, engine, monkeypatch)
            if model.incremental.plan is None:
                assert spec.event.shape[0] == 2 and "channel groups" in model.incremental.plan_missing
            elif engine == "static":
                assert model.incremental.engine_for(model) == "static", model.sampling_path()
            assert cache_disagreement(model, tolerance=1e-9) == "", engine
            fast = model.sample(2, generator=torch.Generator().manual_seed(4), cache=True)
            assert torch.equal(fast, model.sample(2, generator=torch.Generator().manual_seed(4), cache=False)), engine


def test_a_plan_whose_row_ring_is_one_row_short_is_caught(monkeypatch):
    """Mutation: a row computed at once is written up to W - 1 steps before its readers' lag says;
    without those slots in its ring, later rows overwrite values still to be read."""
    from arspec_torch import stepplan
    spec = spec_from(_diagonal_stack("right"))
    model = compiled_for_engine(spec, "numpy", monkeypatch)
    assert model.incremental.plan.burst_lag and cache_disagreement(model, tolerance=1e-9) == ""
    rings = stepplan.StepPlan._rings

    def short(self):
        ring = rings(self)
        for name in self.burst_lag:
            ring[name] -= self.width - 1
        return ring
    monkeypatch.setattr(stepplan.StepPlan, "_rings", short)
    mutant = compiled_for_engine(spec, "numpy", monkeypatch)
    assert "disagrees" in cache_disagreement(mutant, tolerance=1e-9)


def test_a_torch_path_that_scans_the_mirrored_row_left_to_right_is_caught(monkeypatch):
    """Mutation: the torch path's scan order taken as plain raster order (the mirrored state read
    before it is computed) makes the cache disagree with the graph."""
    spec = spec_from(_diagonal_stack("right"))
    assert cache_disagreement(compiled_for_engine(spec, "torch", monkeypatch), tolerance=1e-9) == ""
    monkeypatch.setattr(cache_module, "scan_order", lambda offsets, spatial: np.arange(int(np.prod(spatial))))
    monkeypatch.setattr(cache_module, "scan_rank", lambda offsets, spatial: np.arange(int(np.prod(spatial))))
    assert "disagrees" in cache_disagreement(compiled_for_engine(spec, "torch", monkeypatch), tolerance=1e-9)
