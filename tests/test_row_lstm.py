"""PixelRNN's Row LSTM declared by its step (`arspec.primitives.recurrence.RowLstm`): the step
scanned along its rows equals the fast kernel that trains it (`kernels.row_lstm`), values and
gradients; every cached-generation engine lowers it and agrees with the training graph and the
naive sampler; a step that adds the state bias on the first row as well is caught."""
from __future__ import annotations

import pytest
import torch
from arspec_torch.declared import declared
from arspec_torch.kernels import KERNELS
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from arspec.primitives.recurrence import RowLstm
from arspec.primitives.step import StepBuilder
from tests.helpers import compiled_for_engine, engines_here, spec_from
from tests.strategies import examples, recurrent_stacks


def _scan_and_cell(cell: RowLstm, height: int, width: int, batch: int, seed: int):
    """The fast kernel and the declared step scanned row by row, on the same pre-activations and
    parameters: both states [h, c], and the inputs."""
    generator = torch.Generator().manual_seed(seed)
    h, k = cell.hidden, cell.kernel
    tensors = {"gate_bias": torch.randn(4 * h, generator=generator, dtype=torch.float64),
               "state_weight": torch.randn(4 * h, h, k, generator=generator, dtype=torch.float64) / k,
               "state_bias": torch.randn(4 * h, generator=generator, dtype=torch.float64)}
    for t in tensors.values():
        t.requires_grad_(True)
    pre = torch.randn(batch, 4 * h, height, width, generator=generator, dtype=torch.float64, requires_grad=True)
    assert KERNELS["row_lstm"] is not declared                # the model trains through the fast kernel
    fast = KERNELS["row_lstm"](pre, **tensors, program=cell.program)
    return fast, declared(pre, program=cell.program, **tensors), [pre, *tensors.values()]


@settings(max_examples=examples(25), deadline=None)
@given(hidden=st.integers(1, 3), kernel=st.sampled_from([1, 3, 5]), height=st.integers(1, 5), width=st.integers(1, 6),
       batch=st.integers(1, 2), seed=st.integers(0, 1000))
def test_the_declared_cell_equals_the_fast_kernel_in_values_and_gradients(hidden, kernel, height, width, batch, seed):
    old, new, inputs = _scan_and_cell(RowLstm(hidden, kernel), height, width, batch, seed)
    assert torch.allclose(new, old, atol=1e-12)
    weights = torch.randn_like(old)
    grads = [torch.autograd.grad((out * weights).sum(), inputs, allow_unused=True) for out in (old, new)]
    for a, b, x in zip(*grads, inputs):                       # one row: the state weights are unused (a zero gradient)
        assert torch.allclose(torch.zeros_like(x) if a is None else a, torch.zeros_like(x) if b is None else b, atol=1e-12)


def test_a_cell_that_adds_the_state_bias_on_the_first_row_too_is_caught():
    class EveryRowBias(RowLstm):
        def step(self, b: StepBuilder) -> int:                # the state bias read at the pixel, not above it
            h, half = self.hidden, self.kernel // 2
            above = [b.state((-1, dx)) for dx in range(-half, half + 1)]
            recurrent = b.product([b.slice(s, 0, h) for s in above], "state_weight", 4 * h, taps=range(self.kernel))
            gates = b.add(b.read(0, (0, 0)), b.product([b.inside((0, 0))], "gate_bias", 4 * h), recurrent,
                          b.product([b.inside((0, 0))], "state_bias", 4 * h))
            o, f, i, g = (b.slice(gates, k * h, (k + 1) * h) for k in range(4))
            c = b.add(b.mul(b.act("sigmoid", f), b.slice(above[half], h, 2 * h)), b.mul(b.act("sigmoid", i), b.act("tanh", g)))
            return b.concat(b.mul(b.act("sigmoid", o), b.act("tanh", c)), c)
    old, new, _ = _scan_and_cell(RowLstm(2, 3), 3, 4, 2, 0)
    assert torch.allclose(new, old, atol=1e-12)
    old, mutant, _ = _scan_and_cell(EveryRowBias(2, 3), 3, 4, 2, 0)
    assert not torch.allclose(mutant[:, :, 0], old[:, :, 0])


def _reads_no_data(model) -> bool:
    x, _ = model.example_inputs(2, torch.Generator().manual_seed(5))
    with torch.no_grad():
        return torch.equal(model(x), model(1 - x.clamp(max=1)))


@settings(max_examples=examples(30), deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(source=recurrent_stacks().filter(lambda text: "diagonal_lstm" not in text))
def test_random_row_lstm_stacks_sample_through_every_engine_as_the_graph_says(source):
    """One or two channel groups (R -> G -> B with the state of the row above shared by every
    group), kernels 1, 3 and 5, through the C step, the numpy step, the static program and the
    torch path."""
    spec = spec_from(source)
    with pytest.MonkeyPatch.context() as monkeypatch:
        for engine in engines_here():
            model = compiled_for_engine(spec, engine, monkeypatch)
            assert model.incremental is not None
            if model.incremental.plan is None:      # only where a first layer that reads nothing (1x1, mask A, one group)
                assert _reads_no_data(model), model.incremental.plan_missing    # leaves a model of no data
                assume(False)
            x, _ = model.example_inputs(2, torch.Generator().manual_seed(3))
            with torch.no_grad():
                assert torch.allclose(model.incremental.teacher_forced(model, x), model(x), atol=1e-9, rtol=1e-9), engine
            fast = model.sample(2, generator=torch.Generator().manual_seed(4), cache=True)
            assert torch.equal(fast, model.sample(2, generator=torch.Generator().manual_seed(4), cache=False)), engine
