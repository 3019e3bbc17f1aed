"""NADE: its outputs are raw distribution parameters, and cached sampling (the hidden state carried
along the order) draws exactly what the naive loop draws, much faster."""
from __future__ import annotations

from pathlib import Path

import torch

import arspec
from tests.helpers import spec_from

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
