"""Output distributions: PixelCNN++'s coupled pixel likelihood against its definition; the numpy
draws of the CPU's per-step plan against the torch draws of naive sampling."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from arspec_torch.distributions import (
    Bernoulli,
    Categorical,
    CoupledLogisticMixture,
    DiscretizedLogisticMixture,
    Distribution,
    LogisticMixture,
)

import arspec

ROOT = Path(__file__).resolve().parent.parent


def _pixel_joint(d: CoupledLogisticMixture, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log sum_k pi_k prod_c P(x_c | k, x_<c), written out from Salimans et al. (2017), eq. 3."""
    k, c = d.mixtures, d.channels
    pi = torch.log_softmax(params[..., :k].sum(dim=1), dim=-1)                   # (B, *S, K)
    xe = d.encode(x, params.dtype)
    total = pi
    for i in range(c):
        mean = params[:, i, ..., k:2 * k]
        for j in range(i):
            coeff = torch.tanh(params[:, i, ..., 3 * k + k * j:3 * k + k * (j + 1)])
            mean = mean + coeff * xe[:, j].unsqueeze(-1)
        scale = params[:, i, ..., 2 * k:3 * k].clamp(min=-7.0)
        total = total + DiscretizedLogisticMixture.component_log_probs(d, x[:, i], mean, scale)
    return torch.logsumexp(total, dim=-1)


def test_coupled_terms_sum_to_the_pixels_joint_mixture():
    d = CoupledLogisticMixture(classes=16, mixtures=3, channels=3)
    gen = torch.Generator().manual_seed(0)
    params = torch.randn((4, 3, 2, 5, d.params_per_element), generator=gen, dtype=torch.float64)
    x = torch.randint(0, 16, (4, 3, 2, 5), generator=gen)
    terms = d.log_prob(params, x)
    assert torch.allclose(terms.sum(dim=1), _pixel_joint(d, params, x), atol=1e-10)


def test_the_green_term_reads_the_red_value_and_the_red_term_does_not_read_green():
    d = CoupledLogisticMixture(classes=16, mixtures=2, channels=3)
    gen = torch.Generator().manual_seed(1)
    params = torch.randn((1, 3, 1, 1, d.params_per_element), generator=gen, dtype=torch.float64)
    x = torch.tensor([[[[3]], [[7]], [[11]]]])
    other_red, other_green = x.clone(), x.clone()
    other_red[:, 0] = 12
    other_green[:, 1] = 0
    base = d.log_prob(params, x)
    assert base[0, 1] != d.log_prob(params, other_red)[0, 1]
    assert base[0, 0] == d.log_prob(params, other_green)[0, 0]


def test_coupled_probabilities_of_one_pixel_sum_to_one():
    d = CoupledLogisticMixture(classes=5, mixtures=2, channels=3)
    params = torch.randn((1, 3, 1, 1, d.params_per_element), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    grid = torch.cartesian_prod(*[torch.arange(5)] * 3).reshape(-1, 3, 1, 1)
    total = d.log_prob(params.expand(len(grid), -1, -1, -1, -1), grid).sum(dim=1).logsumexp(dim=0).exp()
    assert abs(float(total) - 1.0) < 1e-10


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("d", [Categorical(256), Categorical(3), Bernoulli()], ids=["256 classes", "3 classes", "bernoulli"])
def test_numpy_draws_and_encodings_equal_the_torch_ones_bit_for_bit(d, dtype):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4000, d.params_per_element, generator=g, dtype=dtype) * 3
    uniforms = torch.rand(4000, d.noise_per_element, generator=g)
    uniforms[:7] = torch.tensor([0.0, 1.0, 1e-13, 1 - 1e-8, 0.5, 1e-7, 0.999999])[:, None]     # the clamped ends
    expected = d.sample(logits, uniforms)
    assert np.array_equal(d.sample_numpy(logits.numpy(), uniforms.numpy()), expected.numpy())
    classes = torch.arange(d.classes)
    np_dtype = np.dtype(str(dtype).removeprefix("torch."))
    assert np.array_equal(d.encode_numpy(classes.numpy(), np_dtype), d.encode(classes, dtype).numpy())


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_cached_sampling_that_draws_in_numpy_equals_naive_sampling_at_any_temperature(temperature):
    model = arspec.compile(arspec.load_spec(ROOT / "specs" / "wavenet.yaml", overrides=["event.shape=[40]"]), seed=0).eval()
    assert model.incremental.engine_for(model) == "plan" and model.distribution.draws_in_numpy
    fast = model.sample(3, generator=torch.Generator().manual_seed(1), cache=True, temperature=temperature)
    slow = model.sample(3, generator=torch.Generator().manual_seed(1), cache=False, temperature=temperature)
    assert torch.equal(fast, slow)


def test_a_flows_locations_and_log_scales_are_its_components_without_the_weights():
    d = LogisticMixture(mixtures=3)
    params = torch.randn(2, 5, 9, dtype=torch.float64) * 4
    _, means, log_scales = d.components(params)
    located, scaled = d.locations_and_log_scales(params)
    assert torch.equal(located, means) and torch.equal(scaled, log_scales)


@pytest.mark.parametrize("spec_name, overrides", [
    ("made.yaml", ["params.hidden=16", "event.shape=[1,4,4]"]),                    # Bernoulli, a flat network output
    ("pixelcnn_rgb.yaml", ["event.shape=[3,6,6]", "params.channels=12", "params.double=24"]),   # 256 classes, R, G, B
    ("video_pixel_network_small.yaml", ["event.shape=[3,1,4,4]", "params.channels=4", "params.state=4"]),              # frames and channels swapped inside
])
def test_the_training_loss_read_in_the_networks_layout_is_minus_log_p(spec_name, overrides):
    """The loss sums `nll_terms` over the network's own layout; it must equal -log p(x) summed
    element by element in the user's layout."""
    spec = arspec.load_spec(ROOT / "specs" / spec_name, overrides=overrides)
    model = arspec.compile(spec, seed=0).double().eval()
    x, context = model.example_inputs(3, generator=torch.Generator().manual_seed(1))
    assert type(model.distribution).nll_terms is not Distribution.nll_terms       # the layout-free path is taken
    assert torch.allclose(model.training_loss(x, **context), -model.log_prob(x, **context), rtol=0, atol=1e-9)
