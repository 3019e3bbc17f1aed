"""Order-agnostic models (deep NADE, ConvNADE; Uria et al. 2014, 2016): the data gate proven,
statically and on the compiled module, for random masks; the training loss's weighting proven by
exact enumeration; exact per-ordering likelihoods that normalise; ensembles; exact completion."""
from __future__ import annotations

import itertools
import math
import subprocess
import sys
from pathlib import Path

import arspec_torch.kernels as kernels
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings

import arspec
from arspec.dynamic import dynamic_check, generic_parameters, measure_columns, random_observed
from arspec.testing import assert_measured_equals_predicted
from tests.helpers import all_configurations, problems_of, spec_from, verified
from tests.strategies import agnostic_specs, examples

ROOT = Path(__file__).resolve().parent.parent
PROPERTY = settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.too_slow])

TINY = """\
name: tiny_deep_nade
event: {shape: [3]}
distribution: {type: bernoulli}
ordering: {type: agnostic}
graph:
  seen:   {op: observe, inputs: [x]}
  inputs: {op: concat, inputs: [seen, observed]}
  h:      {op: linear, features: 6, activation: tanh}
  out:    {op: linear, features: output}
"""


def tiny_model(text: str = TINY) -> arspec.ARModel:
    model = arspec.compile(spec_from(text), seed=0, dtype=torch.float64).eval()
    with torch.no_grad():                       # far from uniform, so a wrong weighting shows
        for p in model.parameters():
            p.mul_(3.0)
    return model


def steps_of(permutation: tuple[int, ...]) -> torch.Tensor:
    """The step of each element when `permutation` lists the elements in generation order."""
    step = torch.empty(len(permutation), dtype=torch.long)
    step[list(permutation)] = torch.arange(len(permutation))
    return step


def expected_loss(model: arspec.ARModel, x: torch.Tensor, loss) -> torch.Tensor:
    """E over the training distribution of masks (d uniform in 0..D-1, then a uniform subset of
    size d) of loss(model, x, observed), by enumerating every mask."""
    n = x.shape[1]
    total = torch.zeros(len(x), dtype=torch.float64)
    for d in range(n):
        for subset in itertools.combinations(range(n), d):
            observed = torch.zeros(len(x), n, dtype=torch.bool)
            observed[:, list(subset)] = True
            total += loss(model, x, observed) / (n * math.comb(n, d))
    return total


def average_over_orderings(model: arspec.ARModel, x: torch.Tensor) -> torch.Tensor:
    """The average over all D! orderings of -log p(x | ordering)."""
    perms = list(itertools.permutations(range(x.shape[1])))
    return sum(-model.log_prob_in_order(x, steps_of(p)) for p in perms) / len(perms)


def test_the_training_loss_is_unbiased_for_the_nll_averaged_over_orderings():
    model = tiny_model()
    x = all_configurations((3,), 2)
    with torch.no_grad():
        want = average_over_orderings(model, x)
        got = expected_loss(model, x, lambda m, x, obs: m.agnostic_loss_given(x, obs))
    assert torch.allclose(got, want, rtol=0, atol=1e-10)


def _terms(model, x, observed):
    lp = model.distribution.log_prob(model(x, observed=observed), x)
    return lp, observed.sum(1).double(), x.shape[1]


def test_the_weight_off_by_one_and_a_loss_over_observed_elements_are_biased():
    model = tiny_model()
    x = all_configurations((3,), 2)

    def off_by_one(m, x, observed):                  # D / (D - d + 1): the other public code path
        lp, d, n = _terms(m, x, observed)
        return -(lp * ~observed).sum(1) * n / (n - d + 1)

    def over_observed_too(m, x, observed):           # sums the observed elements' terms as well
        lp, d, n = _terms(m, x, observed)
        return -lp.sum(1) * n / (n - d)

    with torch.no_grad():
        want = average_over_orderings(model, x)
        for mutant in (off_by_one, over_observed_too):
            assert (expected_loss(model, x, mutant) - want).abs().max() > 1e-3


def test_the_sampled_training_loss_converges_to_its_expectation():
    model = tiny_model()
    x = all_configurations((3,), 2)[5:6].expand(200_000, 3)
    with torch.no_grad():
        sampled = model.agnostic_loss(x, generator=torch.Generator().manual_seed(0))
        want = float(average_over_orderings(model, x[:1]))
    assert abs(float(sampled.mean()) - want) < 4 * float(sampled.std()) / len(x) ** 0.5


@pytest.mark.parametrize("permutation", [(0, 1, 2), (2, 0, 1), (1, 2, 0)])
def test_each_ordering_gives_a_normalised_distribution(permutation):
    model = tiny_model()
    xs = all_configurations((3,), 2)
    with torch.no_grad():
        total = torch.logsumexp(model.log_prob_in_order(xs, steps_of(permutation)), 0).exp()
    assert abs(float(total) - 1.0) < 1e-12


def test_convnade_sums_to_one_over_all_binary_3x3_images_for_a_random_ordering():
    spec = arspec.load_spec(ROOT / "specs" / "convnade.yaml", overrides=[
        "event.shape=[1,3,3]", "params.channels=3", "params.kernel=2", "params.hidden=8"])
    model = arspec.compile(spec, seed=0, dtype=torch.float64).eval()
    order = model.evaluation_orders(2)[1]
    assert not torch.equal(order, model.order)
    xs = all_configurations((1, 3, 3), 2)
    with torch.no_grad():
        lp = model.log_prob_in_order(xs, order)
    assert len(xs) == 2 ** 9 and abs(float(torch.logsumexp(lp, 0).exp()) - 1.0) < 1e-9


def test_an_ensemble_is_the_log_mean_exp_of_its_orderings():
    model = tiny_model()
    x = all_configurations((3,), 2)
    orders = model.evaluation_orders(4)
    assert torch.equal(orders[0], model.order)
    with torch.no_grad():
        each = torch.stack([model.log_prob_in_order(x, o) for o in orders])
        assert torch.allclose(model.log_prob(x, orderings=4), torch.logsumexp(each, 0) - math.log(4))
        assert torch.allclose(model.log_prob(x, orderings=1), model.log_prob(x))
        assert torch.allclose(model.log_prob(x), model.log_prob_elements(x).sum(1))


def test_samples_follow_the_model_and_completion_is_exact_for_any_known_set():
    model = tiny_model()
    xs = all_configurations((3,), 2)
    with torch.no_grad():
        p = model.log_prob(xs).exp()
    samples = model.sample(40_000, generator=torch.Generator().manual_seed(0))
    codes = (samples * torch.tensor([4, 2, 1])).sum(1)
    freq = torch.bincount(codes, minlength=8).double() / len(samples)
    assert (freq - p).abs().max() < 0.015
    # completion given the last element: exact for any known set, by conditioning in the ordering
    # that puts the known elements first (here element 2, then 0, then 1)
    given, known = torch.tensor([0, 0, 1]), torch.tensor([False, False, True])
    assert model.completion_is_exact(known)
    done = model.sample(40_000, generator=torch.Generator().manual_seed(1), given=given, known=known)
    assert bool((done[:, 2] == 1).all())
    rows = xs[xs[:, 2] == 1]
    with torch.no_grad():
        known_first = model.log_prob_in_order(rows, torch.tensor([1, 2, 0]))
    codes = (done[:, :2] * torch.tensor([2, 1])).sum(1)
    freq = torch.bincount(codes, minlength=4).double() / len(done)
    assert (freq - torch.softmax(known_first, 0)).abs().max() < 0.015


@PROPERTY
@given(agnostic_specs())
def test_order_agnostic_models_read_exactly_the_observed_elements(case):
    text, _ = case
    spec = spec_from(text)
    report = verified(spec)
    assert report.agnostic["gates"] == ["seen"] and "inputs" in report.agnostic["mask_inputs"]
    assert_measured_equals_predicted(spec)


@PROPERTY
@given(agnostic_specs(bypass=True))
def test_data_reaching_a_layer_without_the_gate_is_caught_statically_and_on_the_module(case):
    text, culprit = case
    spec = spec_from(text)
    report = arspec.analyze(spec)
    assert not report.ok and report.errors[0].path == f"graph.{culprit}"
    assert "observe" in report.errors[0].message
    # the module confirms it: with nothing observed, its outputs still change with x
    model = arspec.compile(spec, seed=0).double().eval()
    generic_parameters(model, 0, spec.ir)
    n = spec.ir.ctx.elements
    nothing = torch.zeros(tuple(spec.event.shape), dtype=torch.float64)
    assert measure_columns(model, np.arange(n), observed=nothing).any()


@PROPERTY
@given(agnostic_specs())
def test_a_gate_kernel_that_lets_x_through_is_caught_dynamically(case):
    text, _ = case
    spec = spec_from(text)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(kernels.KERNELS, "observe", lambda x, observed: x)
        result = dynamic_check(spec, arspec.compile(spec, seed=0))
    n = spec.ir.ctx.elements
    assert {source for mask, _, source in result.unexpected if mask == 0} == set(range(n))


def test_a_network_that_drops_the_mask_the_spec_feeds_is_caught_dynamically(monkeypatch):
    spec = arspec.load_spec(ROOT / "specs" / "deep_nade.yaml", overrides=["event.shape=[1,3,3]", "params.hidden=8"])
    honest = kernels.concat
    monkeypatch.setitem(kernels.KERNELS, "concat", lambda a, b: honest(a, torch.zeros_like(b)))
    result = dynamic_check(spec, arspec.compile(spec, seed=0))
    assert not result.agrees and "does not change with it" in result.mask_problem


def test_random_masks_are_drawn_as_training_draws_them():
    rng = np.random.default_rng(0)
    counts = np.bincount([random_observed(4, rng).sum() for _ in range(4000)], minlength=5)
    assert counts[4] == 0 and (np.abs(counts[:4] / 4000 - 0.25) < 0.03).all()


@pytest.mark.parametrize("text, message", [
    ("ordering: {type: raster}\ngraph:\n  g: {op: observe, inputs: [x]}\n  out: {op: linear, features: output}\n",
     "which exists only under `ordering: {type: agnostic}`"),
    ("ordering: {type: agnostic}\ngraph:\n  g: {op: observe, inputs: [observed]}\n  out: {op: linear, features: output}\n",
     "its inputs must be [x]"),
    ("ordering: {type: agnostic}\ngraph:\n  out: {op: masked_linear, inputs: [x], features: output}\n",
     "an order-agnostic model uses linear layers"),
    ("ordering: [{type: agnostic}, {type: raster}]\ngraph:\n  out: {op: linear, features: output}\n",
     "an agnostic ordering stands alone"),
    ("ordering: {type: agnostic}\nconditioning: {observed: {type: global, classes: 3}}\ngraph:\n  out: {op: linear, features: output}\n",
     "name this conditioning otherwise"),
    ("ordering: {type: agnostic}\ngraph:\n  observed: {op: linear, inputs: [x], features: output}\n",
     "'observed' is reserved"),
])
def test_order_agnostic_spec_mistakes_are_located_errors(text, message):
    problems = problems_of("name: t\nevent: {shape: [1, 2, 2]}\ndistribution: {type: bernoulli}\n" + text)
    assert any(message in p for p in problems), problems


@pytest.mark.slow          # make test-all: the command-line flag (ensembles over orderings are tested through the API above)
def test_eval_with_orderings_from_the_command_line(tmp_path):
    out = tmp_path / "run"
    arspec_cli = [sys.executable, "-m", "arspec"]
    train = subprocess.run([*arspec_cli, "train", str(ROOT / "specs" / "deep_nade.yaml"), "--set", "event.shape=[1,8,8]",
                            "--set", "params.hidden=16", "--data", "digits-binary", "--steps", "3", "--out", str(out), "--quiet"],
                           capture_output=True, text=True)
    assert train.returncode == 0, train.stderr
    assert "order-agnostic estimate" in train.stdout
    one = subprocess.run([*arspec_cli, "eval", str(out), "--limit", "20"], capture_output=True, text=True)
    three = subprocess.run([*arspec_cli, "eval", str(out), "--limit", "20", "--orderings", "3"], capture_output=True, text=True)
    assert "exact in raster order" in one.stdout and "ensemble of 3 orderings" in three.stdout, (one.stderr, three.stderr)
    wrong = subprocess.run([*arspec_cli, "eval", str(out), "--orderings", "0"], capture_output=True, text=True)
    assert wrong.returncode == 2 and "--orderings" in wrong.stderr
