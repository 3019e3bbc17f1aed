"""Output distributions: PixelCNN++'s coupled pixel likelihood against its definition."""
from __future__ import annotations

import torch
from arspec_torch.distributions import CoupledLogisticMixture, DiscretizedLogisticMixture


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
