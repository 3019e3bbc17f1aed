"""PixelVAE, a model of several parts: the verifier states and proves each part's guarantee (the
decoder is autoregressive over x given z; x reaches it only through its masked path and z; an
autoregressive prior is verified like any model), a decoder that reads the encoder's features of x
is reported and really leaks, the bound and the importance-weighted estimate are right against an
exact marginal, and training, checkpoints, evaluation and sampling work from the command line."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings

import arspec
from arspec.dynamic import dynamic_check, measure_columns
from tests.helpers import all_configurations, problems_of, spec_from
from tests.strategies import examples, pixelvae_specs

ROOT = Path(__file__).resolve().parent.parent
PIXELVAE = ROOT / "specs" / "pixelvae.yaml"
AR_PRIOR = ROOT / "specs" / "pixelvae_ar_prior.yaml"
LEAKY = ROOT / "specs" / "broken" / "pixelvae_decoder_reads_encoder.yaml"
PROPERTY = settings(max_examples=examples(12), deadline=None, suppress_health_check=[HealthCheck.too_slow])


class GivenZ:
    """The whole model's distribution parameters with z held fixed, as a module `measure_columns`
    can probe: what the prediction of each element really reads of x, through every path the
    compiled model has (its decoder and any encoder feature fed to it)."""

    def __init__(self, model, z: torch.Tensor) -> None:
        self.model, self.z = model, z
        self.event_shape, self.distribution = model.event_shape, model.distribution

    def example_inputs(self, batch: int, generator=None):
        return self.model.example_inputs(batch, generator)[0], {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, z=self.z.expand(len(x), *self.z.shape[1:]))

    def user_index(self) -> np.ndarray:
        return self.model.decoder.user_index()


def reads_later_elements(spec) -> bool:
    """Whether some element's prediction, z fixed, changes with itself or an element generated after it."""
    model = arspec.compile(spec, seed=0).double().eval()
    z = model.sample_latent(1, torch.Generator().manual_seed(0))
    n = int(np.prod(spec.event.shape))
    with torch.no_grad():
        measured = measure_columns(GivenZ(model, z), np.arange(n))
    order = spec.decoder.ir.ctx.order(0)
    return bool((measured & (order[None, :] >= order[:, None])).any())


# -- the verifier -------------------------------------------------------------------------------

def test_pixelvae_states_and_proves_each_part_guarantee():
    report = arspec.analyze(arspec.load_spec(PIXELVAE))
    assert report.ok and not report.warnings
    text = "\n".join(report.guarantees)
    assert "autoregressive over x given z" in text
    assert "x reaches the decoder only through its masked path and z" in text
    assert "from the prior (prior) when sampling" in text and "standard normal" in text


@PROPERTY
@given(pixelvae_specs())
def test_the_decoder_reads_exactly_what_the_analysis_predicts_given_z(text):
    spec = spec_from(text)
    assert arspec.analyze(spec).ok
    model = arspec.compile(spec, seed=0)
    result = dynamic_check(spec.decoder, model.decoder, cache=True)
    assert result.agrees, (result.missing[:5], result.unexpected[:5], result.cache_problem)


@PROPERTY
@given(pixelvae_specs(leak=True))
def test_a_decoder_reading_encoder_features_of_x_is_reported_and_really_leaks(text):
    spec = spec_from(text)
    report = arspec.analyze(spec)
    assert [e.path for e in report.errors] == ["parts.decoder.conditioning.feat.from"]
    assert "conditioning leak across parts" in report.errors[0].message
    assert reads_later_elements(spec), "the mutation should really leak in the compiled model"


def test_the_correct_pixelvae_does_not_read_later_elements_given_z():
    spec = arspec.load_spec(PIXELVAE, overrides=["event.shape=[1,8,8]", "latent.shape=[16,2,2]"])
    assert not reads_later_elements(spec)


def test_the_broken_zoo_spec_is_rejected_at_the_from_field():
    report = arspec.analyze(arspec.load_spec(LEAKY))
    (error,) = report.errors
    assert error.path == "parts.decoder.conditioning.feat.from" and error.location.line == 25
    assert reads_later_elements(arspec.load_spec(LEAKY))


@pytest.mark.parametrize("override, where", [
    ("parts.decoder.graph.h0_conv.mask=B", "parts.decoder.graph.h0_conv"),          # the first horizontal layer sees its pixel
    ("parts.decoder.graph.v0_down.by=[0,0]", "parts.decoder.graph"),                # the vertical stack is not shifted
])
def test_a_mutated_decoder_mask_or_shift_is_caught_in_its_part(override, where):
    report = arspec.analyze(arspec.load_spec(PIXELVAE, overrides=[override]))
    assert report.errors and all(e.path.startswith(where) for e in report.errors), [str(e) for e in report.errors]


def test_an_autoregressive_prior_is_verified_like_any_model():
    report = arspec.analyze(arspec.load_spec(AR_PRIOR))
    assert report.ok and "prior" in report.parts
    assert any("autoregressive over the latent map [8, 7, 7]" in g for g in report.guarantees)
    broken = arspec.analyze(arspec.load_spec(AR_PRIOR, overrides=["parts.prior.graph.h0_conv.mask=B"]))
    assert broken.errors and all(e.path.startswith("parts.prior.graph") for e in broken.errors)


# -- located errors -------------------------------------------------------------------------------

@pytest.mark.parametrize("override, expected", [
    ("parts.encoder.graph.post.channels=30", "parts.encoder.graph.post: the output node 'post' has shape [30, 7, 7]"),
    ("parts.decoder.conditioning.z.channels=8", "parts.decoder.conditioning.z: this input reads the latent [16, 7, 7]"),
    ("latent.shape=[16,5,5]", "latent.shape: the latent's spatial sizes [5, 5] must divide"),
    ("parts.prior.role=posterior", "parts.prior.role: a part needs a role"),
    ("parts.encoder.colour=1", "parts.encoder.colour: unknown key 'colour'"),
    ("parts.decoder.conditioning.z.from=encoder.nothing", "the encoder has no node 'nothing'"),
    ("parts.decoder.conditioning.z.from=null", "the decoder never reads z"),
    ("parts.decoder.event={shape: [1, 14, 14]}", "parts.decoder.event.shape: this part's event must be [1, 28, 28]"),
    ("parts.prior={role: prior, distribution: {type: bernoulli}, graph: {o: {op: conv1x1, inputs: [x], channels: output}}}",
     "parts.prior.distribution.type: the latent z is real-valued"),
])
def test_errors_in_parts_are_located_with_their_field_path(override, expected):
    problems = problems_of(PIXELVAE.read_text(), [override])
    assert any(expected in p for p in problems), problems


def test_every_problem_of_every_part_is_reported_at_its_line():
    text = PIXELVAE.read_text().replace("mask: A, condition: [zf]", "mask: C, condition: [zf]").replace("kernel: 3, activation: relu}", "kernel: 0, activation: relu}", 1)
    problems = problems_of(text)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if row.strip().startswith("e1:"))
    assert any(f":{line}:" in p and "parts.encoder.graph.e1.kernel" in p for p in problems), problems
    assert any("parts.decoder.graph.h0_conv.mask" in p for p in problems), problems


def test_from_outside_a_model_of_parts_is_an_error():
    problems = problems_of("""
        name: a
        event: {shape: [4]}
        distribution: {type: bernoulli}
        conditioning: {c: {type: local, channels: 2, from: latent}}
        graph: {o: {op: conv1x1, inputs: [x], channels: output}}
    """)
    assert problems == ["test.yaml:5:46: conditioning.c.from: `from:` feeds an input from another part; only a part of a spec "
                        "with `parts:` has other parts"]


def test_duplicate_parts_are_reported():
    text = PIXELVAE.read_text().replace("  prior: {role: prior, type: standard_normal}\n",
                                        "  prior: {role: prior, type: standard_normal}\n  prior: {role: prior, type: standard_normal}\n")
    assert any("duplicate key 'prior'" in p for p in problems_of(text))


# -- the bound and the importance-weighted estimate against the exact marginal -------------------

TINY_VAE = """
    name: tiny_vae
    event: {shape: [1, 2, 2]}
    latent: {shape: [1, 1, 1]}
    objective: {type: elbo}
    parts:
      encoder:
        role: encoder
        graph:
          e: {op: conv2d, inputs: [x], channels: 4, kernel: 3, activation: tanh}
          d: {op: space_to_depth, factor: 2}
          post: {op: conv1x1, channels: 2}
      prior: {role: prior, type: standard_normal}
      decoder:
        role: decoder
        distribution: {type: bernoulli}
        conditioning: {z: {type: local, channels: 1, upsample: 2, from: latent}}
        graph:
          h: {op: masked_conv2d, inputs: [x], channels: 6, kernel: 3, mask: A, activation: tanh, condition: [z]}
          out: {op: conv1x1, channels: output, mask: B}
"""


def _exact_log_marginal(model, x: torch.Tensor) -> torch.Tensor:
    """log p(x) = log ∫ p(x | z) N(z; 0, 1) dz for a one-dimensional z, by quadrature on a fine grid."""
    grid = torch.linspace(-9, 9, 4001, dtype=torch.float64)
    step = float(grid[1] - grid[0])
    out = []
    for item in x:
        z = grid.view(-1, 1, 1, 1)
        log_px = model.decoder.log_prob(item.expand(len(grid), *item.shape), z=z)
        log_prior = -0.5 * grid ** 2 - 0.5 * math.log(2 * math.pi)
        out.append(torch.logsumexp(log_px + log_prior, 0) + math.log(step))
    return torch.stack(out)


def test_the_bound_and_the_importance_weighted_estimate_match_the_exact_marginal():
    model = arspec.compile(spec_from(TINY_VAE), seed=3, dtype=torch.float64).eval()
    xs = all_configurations((1, 2, 2), 2)
    with torch.no_grad():
        exact = _exact_log_marginal(model, xs)
        assert abs(float(torch.logsumexp(exact, 0))) < 1e-6                  # the marginal is normalised
        gen = torch.Generator().manual_seed(0)
        elbo = torch.stack([model.elbo(xs, generator=gen) for _ in range(400)]).mean(0)
        iw = model.log_prob(xs, iw=2000, generator=gen)
    assert (elbo <= exact + 1e-3).all()                                          # a lower bound (up to MC noise)
    assert torch.allclose(iw, exact, atol=0.02), (iw - exact)


def test_the_closed_form_kl_is_the_expectation_of_log_q_minus_log_p():
    model = arspec.compile(spec_from(TINY_VAE), seed=1, dtype=torch.float64).eval()
    x = all_configurations((1, 2, 2), 2)[:4]
    with torch.no_grad():
        mean, scale, _ = model.posterior(x)
        kl = model.elbo_terms(x)["kl"]
        z = mean + scale * torch.randn((20000, *mean.shape), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        log_q = (-0.5 * ((z - mean) / scale) ** 2 - torch.log(scale) - 0.5 * math.log(2 * math.pi)).flatten(2).sum(2)
        log_p = (-0.5 * z ** 2 - 0.5 * math.log(2 * math.pi)).flatten(2).sum(2)
    assert torch.allclose((log_q - log_p).mean(0), kl, atol=0.02)


# -- training, warm-up, free bits ----------------------------------------------------------------

def test_kl_warm_up_and_free_bits_shape_the_training_loss():
    model = arspec.compile(spec_from(TINY_VAE, ["objective.kl_warmup=100", "objective.free_nats=5"]), seed=0)
    x = all_configurations((1, 2, 2), 2)
    terms = model.elbo_terms(x, generator=torch.Generator().manual_seed(5))
    model.elbo_terms = lambda x, generator=None, **c: terms                   # one draw of z for every loss below
    clamped = torch.clamp(terms["kl_channels"], min=5.0).sum(1)             # free bits: 5 nats per latent channel
    for step, weight in ((0, 0.0), (50, 0.5), (100, 1.0), (1000, 1.0)):     # linear warm-up over 100 steps
        model.set_step(step)
        assert model.kl_weight == weight
        assert torch.allclose(model.training_loss(x), -terms["reconstruction"] + weight * clamped)


def test_elbo_training_improves_the_bound_and_uses_the_latent():
    spec = arspec.load_spec(PIXELVAE, overrides=["event.shape=[1,4,4]", "latent.shape=[16,1,1]", "params.channels=8",
                                                 "params.double=16", "objective.kl_warmup=20"])
    model = arspec.compile(spec, seed=0)
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(64, 1, 4, 4, generator=gen) < 0.2).long()
    x[:32, :, 2:] = 1                                                         # two kinds of items: z can tell them apart
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    with torch.no_grad():
        before = float(-model.elbo(x, generator=torch.Generator().manual_seed(1)).mean())
    for step in range(80):
        model.set_step(step)
        loss = model.training_loss(x).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = float(-model.elbo(x, generator=torch.Generator().manual_seed(1)).mean())
        kl = float(model.elbo_terms(x)["kl"].mean())
    assert after < before - 3 and kl > 0.5, (before, after, kl)


def test_given_z_the_model_is_its_decoder_and_without_z_log_prob_elements_refuses():
    model = arspec.compile(arspec.load_spec(PIXELVAE, overrides=["event.shape=[1,8,8]", "latent.shape=[16,2,2]"]), seed=0).eval()
    x, _ = model.example_inputs(2)
    z = model.sample_latent(2)
    with torch.no_grad():
        assert torch.equal(model.log_prob_elements(x, z=z), model.decoder.log_prob_elements(x, z=z))
    with pytest.raises(ValueError, match="autoregressive over x given z"):
        model.log_prob_elements(x)


def test_an_autoregressive_prior_samples_and_scores_z():
    spec = arspec.load_spec(AR_PRIOR, overrides=["event.shape=[1,8,8]", "latent.shape=[8,2,2]"])
    model = arspec.compile(spec, seed=0).eval()
    with torch.no_grad():
        z = model.sample_latent(3, torch.Generator().manual_seed(0))
        assert z.shape == (3, 8, 2, 2) and torch.isfinite(model.log_prior(z)).all()
        assert torch.allclose(model.log_prior(z), model.prior.log_prob(z))
        x, _ = model.example_inputs(3)
        assert torch.isfinite(model.elbo(x)).all()


# -- the command line ------------------------------------------------------------------------------

def _arspec(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "arspec", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.mark.slow          # about half a minute of subprocesses (make test-all); the model API is tested above
def test_train_eval_and_sample_a_pixelvae_from_the_command_line(tmp_path):
    out = tmp_path / "run"
    small = ["--set", "params.channels=8", "--set", "params.double=16"]
    trained = _arspec("train", str(PIXELVAE), "--data", "binarized-mnist-5k", "--limit", "64", "--steps", "3",
                      "--batch-size", "32", "--out", str(out), "--quiet", *small, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert "test NLL bound (negative ELBO" in trained.stdout
    evaluated = _arspec("eval", str(out), "--iw", "3", "--limit", "20", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert "negative ELBO" in evaluated.stdout and "+ KL" in evaluated.stdout and "importance-weighted NLL (K=3)" in evaluated.stdout
    sampled = _arspec("sample", str(out), "-n", "4", "-o", str(tmp_path / "s.png"), cwd=tmp_path)
    assert sampled.returncode == 0, sampled.stderr
    for name in ("s.png", "s_reconstructions.png", "s_interpolations.png"):
        assert (tmp_path / name).stat().st_size > 0
    checked = _arspec("check", str(PIXELVAE), str(LEAKY), cwd=ROOT)
    assert checked.returncode == 1
    assert "guarantee: decoder (decoder): autoregressive over x given z" in checked.stdout
    assert "parts.decoder.conditioning.feat.from: conditioning leak across parts" in checked.stdout
