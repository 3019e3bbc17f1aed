"""Property tests: for random models of every op family, the compiled module's measured
dependencies (eval mode, float64, exact comparison) equal the static prediction exactly, and
well-formed constructions are autoregressive."""
from __future__ import annotations

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import arspec
from tests.helpers import all_configurations, assert_measured_equals_predicted, spec_from
from tests.strategies import (
    causal_sequences,
    examples,
    gated_stacks,
    made_specs,
    masked_conv_stacks,
    multiscale_pyramids,
    nade_specs,
    recurrent_stacks,
)

PROPERTY = settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(masked_conv_stacks())
def test_masked_convolution_stacks_measured_equals_predicted(text):
    spec = spec_from(text)
    assert arspec.analyze(spec).ok
    assert_measured_equals_predicted(spec)


@PROPERTY
@given(masked_conv_stacks(coupled="pixel"))
def test_coupled_pixel_likelihood_terms_read_exactly_what_the_analysis_predicts(text):
    spec = spec_from(text)
    assert arspec.analyze(spec).ok
    assert_measured_equals_predicted(spec)       # parameters, and (coupled) the likelihood terms


@PROPERTY
@given(gated_stacks())
def test_gated_stacks_measured_equals_predicted_and_never_see_the_future(text):
    spec = spec_from(text)
    report = arspec.analyze(spec)
    assert report.ok, report.errors
    assert not any("blind spot" in w.message for w in report.warnings)
    assert_measured_equals_predicted(spec)


@PROPERTY
@given(causal_sequences())
def test_causal_dilated_sequences_measured_equals_predicted(text):
    spec = spec_from(text)
    assert arspec.analyze(spec).ok
    assert_measured_equals_predicted(spec)


@PROPERTY
@given(recurrent_stacks())
def test_row_and_diagonal_lstm_measured_equals_predicted(text):
    spec = spec_from(text)
    assert arspec.analyze(spec).ok
    assert_measured_equals_predicted(spec)


@PROPERTY
@given(st.sampled_from(["none", "1x1"]).flatmap(lambda post: multiscale_pyramids(post=post)))
def test_multiscale_pyramids_measured_equals_predicted(text):
    spec = spec_from(text)
    report = arspec.analyze(spec)
    assert report.ok, report.errors
    assert_measured_equals_predicted(spec)


@PROPERTY
@given(made_specs())
def test_made_never_depends_on_later_elements(case):
    text, _ = case
    spec = spec_from(text)
    report = arspec.analyze(spec)
    assert report.ok, report.errors
    assert_measured_equals_predicted(spec)


@PROPERTY
@given(nade_specs(real=True))
def test_nade_reads_exactly_the_earlier_elements(case):
    text, d = case
    spec = spec_from(text)
    report = arspec.analyze(spec)
    assert report.ok
    order = spec.ir.ctx.order(0)
    assert np.array_equal(report.dependencies, order[None, :] < order[:, None])
    assert_measured_equals_predicted(spec)


@settings(max_examples=examples(15), deadline=None)
@given(made_specs())
def test_made_probabilities_sum_to_one_for_every_mask(case):
    text, d = case
    spec = spec_from(text)
    model = arspec.compile(spec, dtype=torch.float64).eval()
    xs = all_configurations(tuple(spec.event.shape), 2)
    for m in range(model.num_masks):
        model.select_mask(m)
        with torch.no_grad():
            total = torch.logsumexp(model.log_prob(xs), 0).exp()
        assert abs(float(total) - 1.0) < 1e-5


@settings(max_examples=examples(15), deadline=None)
@given(nade_specs())
def test_nade_probabilities_sum_to_one(case):
    text, d = case
    spec = spec_from(text)
    model = arspec.compile(spec, dtype=torch.float64).eval()
    xs = all_configurations(tuple(spec.event.shape), 2)
    with torch.no_grad():
        assert abs(float(torch.logsumexp(model.log_prob(xs), 0).exp()) - 1.0) < 1e-5
