"""NADE: its outputs are raw distribution parameters, cached sampling (the hidden state carried
along the order) draws exactly what the naive loop draws, much faster, and the blocked kernel the
torch backend runs the chain through computes the same values and gradients as the chain of calls."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from arspec_torch import kernels
from hypothesis import HealthCheck, given, settings

import arspec
from arspec.dynamic import dynamic_check, generic_parameters
from tests.helpers import spec_from
from tests.strategies import examples, nade_specs

ROOT = Path(__file__).resolve().parent.parent

NADE = """\
name: nade
event: {shape: [1, 4, 5]}
distribution: {type: bernoulli}
ordering: [{type: random, seed: 3}, {type: raster}]
graph:
  n: {op: nade, inputs: [x], hidden: 16}
"""


def test_nade_outputs_are_unsquashed_logits():
    model = arspec.compile(spec_from(NADE), seed=0).eval()
    with torch.no_grad():
        model.net.n__readout__weight.zero_()
        model.net.n__readout__bias.fill_(5.0)
        assert torch.allclose(model(torch.zeros(1, 1, 4, 5)), torch.full((1, 1, 4, 5, 1), 5.0))


def test_cached_and_naive_nade_sampling_agree_for_every_ordering_and_completion():
    model = arspec.compile(spec_from(NADE), seed=0).eval()
    assert model.incremental is not None
    given = torch.randint(0, 2, (1, 4, 5))
    known = torch.zeros(1, 4, 5, dtype=torch.bool)
    known[:, :2] = True
    for mask in range(model.num_masks):
        model.select_mask(mask)
        fast = model.sample(6, generator=torch.Generator().manual_seed(mask), cache=True)
        slow = model.sample(6, generator=torch.Generator().manual_seed(mask), cache=False)
        assert torch.equal(fast, slow)
        fast = model.sample(3, generator=torch.Generator().manual_seed(9), cache=True, given=given, known=known)
        slow = model.sample(3, generator=torch.Generator().manual_seed(9), cache=False, given=given, known=known)
        assert torch.equal(fast, slow) and torch.equal(fast[:, 0, :2], given[0, :2].expand(3, 2, 5))


def test_cached_nade_sampling_carries_the_hidden_state_instead_of_a_pass_per_element():
    model = arspec.compile(arspec.load_spec(ROOT / "specs" / "nade.yaml", overrides=["event.shape=[1,6,6]"]), seed=0).eval()
    passes = []
    model.net.register_forward_hook(lambda *_: passes.append(1))
    model.sample(4, generator=torch.Generator().manual_seed(0), cache=True)
    assert passes == []                       # O(D·H) in all: the prefix sum is updated once per element
    model.sample(4, generator=torch.Generator().manual_seed(0), cache=False)
    assert len(passes) == 36                  # the naive reference: one full pass per element


# -- the blocked kernel the torch backend runs NADE's chain of calls through -------------------------

@settings(max_examples=examples(15), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nade_specs(real=True))
def test_the_blocked_nade_kernel_equals_the_chain_of_calls_for_every_ordering(case):
    text, _ = case
    spec = spec_from(text)
    model = arspec.compile(spec, seed=0, dtype=torch.float64)
    generic_parameters(model, 1, spec.ir)
    assert len(model.net.chains) == 1                   # the interpreter runs NADE's chain as one kernel
    x, _ = model.example_inputs(3, torch.Generator().manual_seed(0))
    chains = model.net.chains
    params = [p for p in model.parameters() if p.requires_grad]
    for mask in range(model.num_masks):
        model.select_mask(mask)
        model.net.chains = chains
        fused = model.log_prob(x)
        grads_fused = torch.autograd.grad(fused.sum(), params)           # the kernel's hand-written backward
        model.net.chains = {}
        plain = model.log_prob(x)
        grads_plain = torch.autograd.grad(plain.sum(), params)
        assert torch.allclose(fused, plain, rtol=1e-10, atol=1e-10)
        for fused_grad, plain_grad in zip(grads_fused, grads_plain):
            assert torch.allclose(fused_grad, plain_grad, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("fn", ["sigmoid", "tanh", "relu", "elu", "identity"])
@pytest.mark.parametrize("scaled", [False, True])
def test_the_nade_kernels_backward_passes_gradcheck(fn, scaled):
    gen = torch.Generator().manual_seed(0)
    d, h, p = 7, 5, 2
    tensors = {"x": torch.randn(3, d, generator=gen), "weight": torch.randn(d, h, generator=gen), "bias": torch.randn(h, generator=gen),
               "out_weight": torch.randn(p, d, h, generator=gen), "out_bias": torch.randn(p, d, generator=gen)}
    if scaled:
        tensors["scale"] = torch.rand(d, generator=gen) + 0.5
    inputs = tuple(t.double().requires_grad_() for t in tensors.values())
    perms = torch.stack([torch.randperm(d, generator=gen) for _ in range(2)])

    def chain(x, weight, bias, out_weight, out_bias, scale=None):
        return kernels.nade_chain(x, weight, bias, perms, out_weight, out_bias, scale, fn=fn, active=1, block=3)
    assert torch.autograd.gradcheck(chain, inputs)


def test_a_blocked_prefix_that_includes_the_current_element_is_caught(monkeypatch):
    spec = arspec.load_spec(ROOT / "specs" / "nade.yaml", overrides=["event.shape=[1,6,6]"])
    model = arspec.compile(spec, seed=0)
    assert dynamic_check(spec, model).agrees
    monkeypatch.setattr(kernels, "strictly_earlier", lambda k, dtype, device: torch.ones(k, k, dtype=dtype, device=device).tril(0))
    result = dynamic_check(spec, model)
    assert not result.agrees and result.unexpected            # x_d now reaches its own conditional
