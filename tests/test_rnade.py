"""RNADE: real-valued NADE with a mixture of Gaussians or Laplace densities per element, computed
in log space with scales bounded below, on the red wine data of the papers' 10-fold protocol."""
from __future__ import annotations

from pathlib import Path

import arspec_torch.kernels as kernels
import numpy as np
import pytest
import torch

import arspec
from arspec.data import load_data
from arspec.data.red_wine import red_wine
from arspec.data.splits import DataError
from arspec.dynamic import dynamic_check
from tests.helpers import spec_from

ROOT = Path(__file__).resolve().parent.parent
MIXTURES = ["gaussian_mixture", "laplace_mixture"]


def rnade(kind: str, elements: int, hidden: int = 8, mixtures: int = 3) -> arspec.ARModel:
    text = f"""\
    name: rnade
    event: {{shape: [{elements}]}}
    distribution: {{type: {kind}, mixtures: {mixtures}}}
    ordering: {{type: random, seed: 1}}
    graph:
      n: {{op: nade, inputs: [x], hidden: {hidden}, rescale: true}}
    """
    return arspec.compile(spec_from(text), seed=0, dtype=torch.float64).eval()


@pytest.mark.parametrize("kind", MIXTURES)
def test_the_density_integrates_to_one(kind):
    model = rnade(kind, 2)
    grid = torch.linspace(-40, 40, 801, dtype=torch.float64)
    xs = torch.cartesian_prod(grid, grid)
    with torch.no_grad():
        density = model.log_prob(xs).exp().reshape(len(grid), len(grid))
    step = float(grid[1] - grid[0])
    assert abs(float(torch.trapezoid(torch.trapezoid(density, dx=step), dx=step)) - 1.0) < 1e-3


@pytest.mark.parametrize("kind", MIXTURES)
def test_standardised_wines_and_far_tails_give_finite_distinct_log_likelihoods(kind):
    model = rnade(kind, 11, hidden=50, mixtures=10).float()
    wines = red_wine(1).train[:200]
    far = torch.stack([torch.full((11,), 50.0), torch.full((11,), 51.0), torch.full((11,), -1e4), torch.full((11,), 1e4)])
    x = torch.cat([wines, far]).requires_grad_(False)
    lp = model.log_prob(x)
    assert torch.isfinite(lp).all()
    distinct = ~torch.all(x[:, None] == x[None, :], dim=-1)
    assert (lp[:, None] != lp[None, :])[distinct].all()       # no two distinct points underflow alike
    lp.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("kind", MIXTURES)
def test_a_scale_cannot_collapse_below_its_bound(kind):
    model = rnade(kind, 3)
    with torch.no_grad():
        model.net.n__readout__bias[-3 * 3:].fill_(-1e3)       # every raw log-scale far below the bound
        model.net.n__readout__weight.zero_()
    _, _, log_scales = model.distribution.components(model(torch.zeros(1, 3)))
    assert torch.allclose(log_scales, torch.full_like(log_scales, np.log(1e-3)))


@pytest.mark.parametrize("kind", MIXTURES)
def test_samples_follow_the_density(kind):
    model = rnade(kind, 1, mixtures=2)
    samples = model.sample(20000, generator=torch.Generator().manual_seed(0)).reshape(-1)
    grid = torch.linspace(-30, 30, 6001, dtype=torch.float64)
    with torch.no_grad():
        density = model.log_prob(grid[:, None]).exp()
    mean = float(torch.trapezoid(density * grid, grid))
    std = float(torch.trapezoid(density * (grid - mean) ** 2, grid)) ** 0.5
    assert abs(float(samples.mean()) - mean) < 4 * std / 20000 ** 0.5


def test_cached_and_naive_sampling_agree_with_rescaling():
    model = rnade("gaussian_mixture", 6)
    assert model.incremental is not None
    fast = model.sample(5, generator=torch.Generator().manual_seed(2), cache=True)
    slow = model.sample(5, generator=torch.Generator().manual_seed(2), cache=False)
    assert torch.allclose(fast, slow)


def test_a_rescaling_kernel_that_mixes_elements_is_caught_dynamically(monkeypatch):
    spec = spec_from("""\
    name: rnade
    event: {shape: [5]}
    distribution: {type: gaussian_mixture, mixtures: 2}
    graph:
      n: {op: nade, inputs: [x], hidden: 3, rescale: true}
    """)
    honest = kernels.element_scale

    def leaky(h, scale, *, element=None):         # element e also receives element e+1's units
        out = honest(h, scale, element=element)
        return out + torch.roll(h, -3, dims=1) if element is None else out

    monkeypatch.setitem(kernels.KERNELS, "element_scale", leaky)
    model = arspec.compile(spec, seed=0)
    model.net.chains = {}                         # the chain of calls (the blocked kernel has its own mutation test)
    result = dynamic_check(spec, model)
    assert not result.agrees and result.unexpected
    assert all(source >= element for _, element, source in result.unexpected)


def test_red_wine_folds_follow_the_papers_protocol():
    with np.load(ROOT / "arspec" / "data" / "bundled" / "red_wine.npz") as f:
        raw, fold = f["x"].astype(np.float64), f["fold"]
    for k in (1, 10):
        splits = red_wine(k)
        assert len(splits.test) == int((fold == k).sum()) and len(splits.validation) == int((fold == k % 10 + 1).sum())
        assert len(splits.train) + len(splits.validation) + len(splits.test) == len(raw)
        seen = torch.cat([splits.train, splits.validation]).double()
        assert torch.allclose(seen.mean(0), torch.zeros(11, dtype=torch.float64), atol=1e-5)
        assert torch.allclose(seen.std(0, unbiased=False), torch.ones(11, dtype=torch.float64), atol=1e-5)
        mean, std = raw[fold != k].mean(0), raw[fold != k].std(0)
        assert np.allclose(splits.test.numpy(), (raw[fold == k] - mean) / std, atol=1e-5)
    with pytest.raises(DataError, match="1..10"):
        load_data(arspec.load_spec(ROOT / "specs" / "rnade.yaml"), "red-wine:11")


def test_rnade_is_the_default_model_of_the_red_wine_data():
    splits = load_data(arspec.load_spec(ROOT / "specs" / "rnade.yaml"))
    assert splits.name == "red-wine:1" and splits.train.dtype == torch.float32 and splits.train.shape[1:] == (11,)


@pytest.mark.slow          # make test-all: the command line's train and eval of RNADE (the API paths are tested above)
def test_rnade_trains_and_evaluates_from_the_command_line(tmp_path):
    import subprocess
    import sys
    out = tmp_path / "run"
    cli = [sys.executable, "-m", "arspec"]
    train = subprocess.run([*cli, "train", str(ROOT / "specs" / "rnade.yaml"), "--data", "red-wine:3", "--steps", "5",
                            "--out", str(out), "--quiet"], capture_output=True, text=True)
    assert train.returncode == 0, train.stderr
    assert "red-wine:3" in train.stdout and "nats/dim" in train.stdout and "bits/dim" not in train.stdout
    evaluated = subprocess.run([*cli, "eval", str(out)], capture_output=True, text=True)
    assert evaluated.returncode == 0 and "on red-wine:3 (test, 159 items)" in evaluated.stdout, evaluated.stderr
