"""Video events [T, C, H, W] and the Video Pixel Network's ops: time-major orders, framewise
convolutions, multiplicative units, residual multiplicative blocks and a conv_lstm over frames —
verified like every op (measured dependencies equal the prediction, classic bugs caught), sampled
through the cache exactly as without it, continued from given frames, and trained on Moving MNIST."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import arspec
from arspec.dynamic import generic_parameters, measure_columns
from tests.helpers import all_configurations, assert_measured_equals_predicted, problems_of, spec_from, verified
from tests.strategies import examples, video_networks
from tests.test_domains import _both_domains

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "specs" / "video_pixel_network_small.yaml"
TINY = ["event.shape=[3,1,4,4]", "params.channels=4", "params.state=4", "graph.decoder.repeat.times=1"]
PROPERTY = settings(max_examples=examples(30), deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _leaks(text: str) -> bool:
    return any("leak" in e.message for e in arspec.analyze(spec_from(text)).errors)


def _reads_a_later_or_same_element(spec) -> bool:
    """What the compiled module really does (generic weights, float64): does any element's
    prediction read itself or an element generated later?"""
    model = arspec.compile(spec, seed=0).double().eval()
    generic_parameters(model, 0, spec.ir)
    measured = measure_columns(model, np.arange(spec.ir.ctx.elements))
    order = spec.ir.ctx.order(0)
    return bool((measured & (order[None, :] >= order[:, None])).any())


# --- the event and its order ------------------------------------------------------------------------
def test_a_video_event_is_frames_of_channels_generated_frame_by_frame():
    spec = arspec.load_spec(SMALL, overrides=["event.shape=[2,3,2,2]", "distribution={type: categorical, classes: 4}",
                                                "params.channels=6", "params.state=6"])
    model = arspec.compile(spec, seed=0)
    assert model.event_shape == (2, 3, 2, 2)
    t, c, y, x = np.meshgrid(*[np.arange(n) for n in (2, 3, 2, 2)], indexing="ij")
    # time-major raster: frames in order, each frame row-major, channels R -> G -> B within a pixel
    assert np.array_equal(model.order.numpy(), ((t * 2 + y) * 2 + x) * 3 + c)
    assert np.array_equal(arspec.analyze(spec).order, model.order.numpy())


def test_an_independent_oracle_finds_no_element_reading_itself_its_frames_later_pixels_or_later_frames():
    """Perturb each element of x in the user's layout and see which log-likelihood terms move:
    only those of the same frame at later pixels, or of later frames — written without arspec's
    own helpers."""
    spec = arspec.load_spec(SMALL, overrides=TINY)
    model = arspec.compile(spec, seed=0).double().eval()
    generic_parameters(model, 3, spec.ir)
    frames, _, height, width = model.event_shape
    x = torch.randint(0, 2, (1, *model.event_shape))
    with torch.no_grad():
        base = model.log_prob_elements(x)[0]
        seen_earlier_frame = False
        for t, c, i, j in np.ndindex(*model.event_shape):
            moved = x.clone()
            moved[0, t, c, i, j] = 1 - moved[0, t, c, i, j]
            changed = model.log_prob_elements(moved)[0] != base
            changed[t, c, i, j] = False          # an element's own term reads its own value
            for t2, c2, i2, j2 in zip(*np.nonzero(changed.numpy())):
                assert (t2, i2, j2) > (t, i, j), f"element {(t2, c2, i2, j2)} reads {(t, c, i, j)}"
                seen_earlier_frame |= t2 > t
    assert seen_earlier_frame, "later frames must read earlier ones (the recurrence carries them)"


def test_a_coupled_likelihood_over_a_video_is_refused_where_it_is_written():
    text = FRAMES.replace("SHIFT", "1").replace("[4, 1, 5, 5]", "[2, 3, 4, 4]").replace(
        "{type: bernoulli}", "{type: discretized_logistic_mixture, classes: 4, mixtures: 1, coupled: true}")
    problems = problems_of(text)
    assert any(p.startswith("test.yaml:3:") and "distribution.coupled: a coupled likelihood is not available for videos" in p for p in problems), problems


# --- every new op: measured dependencies equal the prediction ---------------------------------------
@PROPERTY
@given(video_networks())
def test_video_networks_measured_equals_predicted_and_are_autoregressive(text):
    spec = spec_from(text)
    verified(spec)
    assert_measured_equals_predicted(spec)


def test_the_zoo_vpn_has_no_blind_spot_and_its_recurrence_reaches_every_earlier_frame():
    report = arspec.analyze(arspec.load_spec(SMALL, overrides=["event.shape=[4,1,6,6]"]))
    assert report.ok and not report.warnings, [str(w) for w in report.warnings]


@pytest.mark.parametrize("path", sorted((ROOT / "specs").glob("video_*.yaml")), ids=lambda p: p.stem)
def test_the_zoo_video_models_sum_to_one_over_every_tiny_video(path):
    overrides = ["event.shape=[2,1,2,2]", "params.channels=2", "params.state=2", "graph.decoder.repeat.times=1"]
    if arspec.load_spec(path).distribution.type == "categorical":
        overrides.append("distribution.classes=2")
    model = arspec.compile(arspec.load_spec(path, overrides=overrides), dtype=torch.float64, seed=0).eval()
    xs = all_configurations(model.event_shape, 2)
    with torch.no_grad():
        total = torch.logsumexp(model.log_prob(xs), 0).exp()
    assert abs(float(total) - 1.0) < 1e-9


@settings(max_examples=examples(10), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["ok", "lstm", "mask", "encoder"]).flatmap(lambda bug: video_networks(**{
    "ok": {}, "lstm": {"lstm_shift": 0}, "mask": {"first_mask": "B"}, "encoder": {"context": "encoder"}}[bug])))
def test_video_networks_get_the_same_verdict_in_both_domains(text):
    _, offsets, concrete = _both_domains(text)
    assert offsets.domain == "offsets" and concrete.domain == "concrete"
    assert offsets.ok == concrete.ok, ([str(e) for e in offsets.errors], [str(e) for e in concrete.errors])


FRAMES = """\
name: frame_model
event: {shape: [4, 1, 5, 5]}
distribution: {type: bernoulli}
ordering: {type: frames}
graph:
  enc: {op: conv2d, inputs: [x], channels: 4, kernel: 3}
  mu: {op: multiplicative_unit, kernel: 3}
  state: {op: conv_lstm, hidden: 4, kernel: 3, shift: SHIFT}
  out: {op: conv1x1, channels: output}
"""


def test_a_frames_ordering_draws_each_frame_in_one_step_given_the_earlier_frames():
    spec = spec_from(FRAMES.replace("SHIFT", "1"))
    verified(spec)
    assert_measured_equals_predicted(spec)
    model = arspec.compile(spec, seed=0).eval()
    assert np.array_equal(model.order[:, 0, 0, 0].numpy(), np.arange(4)) and len(model.steps()) == 4
    samples = model.sample(2, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (2, 4, 1, 5, 5) and torch.isfinite(model.log_prob(samples)).all()
    leaky = arspec.analyze(spec_from(FRAMES.replace("SHIFT", "0")))
    assert not leaky.ok and "hint: the output of conv_lstm 'state'" in leaky.errors[0].message


# --- mutations: the classic bugs are caught, and the verdict is what the module does ---------------
@settings(max_examples=examples(15), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(video_networks(lstm_shift=0))
def test_a_conv_lstm_state_that_has_read_the_current_frame_is_a_leak(text):
    assert _leaks(text)
    assert _reads_a_later_or_same_element(spec_from(text))


@settings(max_examples=examples(15), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(video_networks(first_mask="B"))
def test_mask_b_in_the_decoders_first_layer_is_a_leak(text):
    assert _leaks(text)


@settings(max_examples=examples(15), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(video_networks(context="encoder"))
def test_a_decoder_fed_the_encoder_of_the_current_frame_is_a_leak(text):
    assert _leaks(text)
    assert _reads_a_later_or_same_element(spec_from(text))


@settings(max_examples=examples(15), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(video_networks(decoder_mask="none"))
def test_an_unmasked_unit_in_the_decoder_is_judged_by_what_the_module_reads(text):
    spec = spec_from(text)
    assert _leaks(text) == _reads_a_later_or_same_element(spec)


def _unit_convs(spec) -> list:
    """The masked convolutions inside the decoder's multiplicative units (and blocks)."""
    out = []
    for node in spec.ir.op_nodes():
        if node.spec.op in ("multiplicative_unit", "residual_multiplicative_block") and node.spec.mask != "none":
            units = node.attrs["mu"] if "mu" in node.attrs else [node.attrs]
            out += [u["gates"] for u in units]
    return out


@settings(max_examples=examples(20), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(video_networks(), st.integers(0, 2**31 - 1))
def test_flipping_one_gate_mask_bit_is_judged_by_what_the_module_reads(text, seed):
    spec = spec_from(text)
    rng = np.random.default_rng(seed)
    convs = [c for c in _unit_convs(spec) if (~c.connectivity).any()]
    assume(convs)
    conn = convs[rng.integers(len(convs))].connectivity
    off = np.argwhere(~conn)
    conn[tuple(off[rng.integers(len(off))])] = True       # in the spec's IR, hence in the module too
    assert (not arspec.analyze(spec).ok) == _reads_a_later_or_same_element(spec)


def test_a_one_frame_shift_is_what_makes_the_conv_lstm_safe():
    leaky = arspec.load_spec(SMALL, overrides=[*TINY, "graph.context.shift=0"])
    report = arspec.analyze(leaky)
    assert not report.ok
    assert any(e.path == "graph.context" or "context" in e.message for e in report.errors), [str(e) for e in report.errors]


def test_a_vertical_stack_shifted_on_the_wrong_axis_is_named_at_its_shift():
    report = arspec.analyze(arspec.load_spec(SMALL, overrides=[*TINY, "blocks.decoder_layer.graph.v_down.by=[0,0,0]"]))
    (error,) = report.errors
    assert error.path == "blocks.decoder_layer.graph.link"
    assert "the shift by [0, 0, 0] of 'decoder.v_down'" in error.message and "down 1 row (within the frame)" in error.message


# --- sampling: cached equals naive, continuation keeps the given frames ------------------------------
def test_cached_video_sampling_equals_the_naive_loop_and_agrees_with_the_training_graph():
    spec = arspec.load_spec(SMALL, overrides=TINY)
    model = arspec.compile(spec, seed=0).double().eval()
    generic_parameters(model, 1, spec.ir)
    x, _ = model.example_inputs(2, torch.Generator().manual_seed(0))
    assert torch.allclose(model.incremental.teacher_forced(model, x), model(x), atol=1e-10)
    cached = model.sample(2, generator=torch.Generator().manual_seed(5))
    naive = model.sample(2, generator=torch.Generator().manual_seed(5), cache=False)
    assert torch.equal(cached, naive)
    plan, model.incremental.plan = model.incremental.plan, None        # the torch path (what a GPU runs)
    try:
        assert torch.allclose(model.incremental.teacher_forced(model, x), model(x), atol=1e-10)
        assert torch.equal(model.sample(2, generator=torch.Generator().manual_seed(5)), naive)
    finally:
        model.incremental.plan = plan


def test_continuing_a_video_keeps_the_given_frames_and_is_exact():
    spec = arspec.load_spec(SMALL, overrides=TINY)
    model = arspec.compile(spec, seed=0).eval()
    clip = torch.randint(0, 2, model.event_shape)
    known = torch.zeros(model.event_shape, dtype=torch.bool)
    known[:2] = True
    assert model.completion_is_exact(known)
    out = model.sample(3, given=clip, known=known, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[:, :2], clip[:2].expand(3, *clip[:2].shape))
    naive = model.sample(3, given=clip, known=known, generator=torch.Generator().manual_seed(0), cache=False)
    assert torch.equal(out, naive)


# --- Moving MNIST ------------------------------------------------------------------------------------
def test_moving_mnist_is_deterministic_bounces_inside_the_canvas_and_follows_the_event():
    from arspec.data.moving_mnist import trajectories
    from arspec.data.registry import load_data
    from arspec.data.splits import DataError
    spec = arspec.load_spec(SMALL, overrides=["event.shape=[6,1,24,24]"])
    a = load_data(spec, "moving-mnist:train=20,test=5")
    b = load_data(spec, "moving-mnist:train=20,test=5")
    other = load_data(spec, "moving-mnist:train=20,test=5,seed=1")
    assert a.train.shape == (20, 6, 1, 24, 24) and a.test.shape == (5, 6, 1, 24, 24)
    assert torch.equal(a.train, b.train) and not torch.equal(a.train, other.train)
    assert set(a.train.unique().tolist()) == {0, 1}
    assert (a.train.flatten(2).sum(2) > 0).all(), "every frame shows its digits"
    corners = trajectories(np.random.default_rng(0), 50, 2, 40, free=14)
    assert corners.min() >= 0 and corners.max() <= 14
    steps = np.abs(np.diff(corners, axis=2)).max(axis=-1)
    assert steps.max() <= 3, "digits move a little each frame, reflected at the walls"
    with pytest.raises(DataError, match=r"items have shape \[5, 1, 24, 24\], the spec's event is \[6, 1, 24, 24\]"):
        load_data(spec, "moving-mnist:frames=5,train=4,test=2")
    grey = arspec.load_spec(SMALL, overrides=["event.shape=[4,1,16,16]", "distribution={type: categorical, classes: 256}"])
    assert load_data(grey, "moving-mnist:train=4,test=2").train.max() > 1


def test_moving_mnist_refuses_events_that_are_not_grey_square_videos():
    from arspec.data.registry import load_data
    from arspec.data.splits import DataError
    with pytest.raises(DataError, match="square grey frames"):
        load_data(arspec.load_spec(ROOT / "specs" / "pixelcnn.yaml"), "moving-mnist")


# --- the command line: train, continue a clip, pictures ---------------------------------------------
def _cli(capsys, *args: str) -> tuple[int, str, str]:
    """The command line in this process (the same entry point as `arspec`): exit code, stdout, stderr."""
    from arspec.cli.main import main
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_train_on_moving_mnist_then_continue_a_clip_and_write_a_gif_and_a_strip(tmp_path, capsys):
    sets = ["--set", "event.shape=[3,1,16,16]", "--set", "params.channels=4", "--set", "params.state=4", "--set", "graph.decoder.repeat.times=1"]
    code, out, err = _cli(capsys, "train", str(SMALL), *sets, "--data", "moving-mnist:train=16,test=4", "--steps", "2",
                          "--batch-size", "8", "--out", str(tmp_path / "run"), "--quiet")
    assert code == 0, out + err
    checkpoint = next((tmp_path / "run").glob("*.safetensors"))
    clip = np.random.default_rng(0).integers(0, 2, (3, 1, 16, 16))
    np.save(tmp_path / "clip.npy", clip)
    code, out, err = _cli(capsys, "sample", str(checkpoint), "-n", "2", "--given", str(tmp_path / "clip.npy"),
                          "--known", "first-frames:2", "-o", str(tmp_path / "more.npy"))
    assert code == 0 and "approximate" not in err, out + err
    videos = np.load(tmp_path / "more.npy")
    assert videos.shape == (2, 3, 1, 16, 16) and (videos[:, :2] == clip[:2]).all()
    for suffix in (".gif", ".png"):
        code, out, err = _cli(capsys, "sample", str(checkpoint), "-n", "2", "-o", str(tmp_path / f"videos{suffix}"))
        assert code == 0, out + err
    from PIL import Image
    assert Image.open(tmp_path / "videos.gif").n_frames == 3
    assert Image.open(tmp_path / "videos.png").size[0] > 3 * 16
    code, out, err = _cli(capsys, "sample", str(checkpoint), "--given", str(tmp_path / "clip.npy"), "--known", "first-frames:9",
                          "-o", str(tmp_path / "x.npy"))
    assert code == 2 and "K must lie in 0..3" in err
    code, out, err = _cli(capsys, "graph", str(SMALL), "--set", "event.shape=[3,1,8,8]", "--element", "1,0,4,4",
                          "-o", str(tmp_path / "field.png"))
    assert code == 0 and "element frame 1 (c=0, y=4, x=4) reads 100 elements" in out, out + err


@settings(max_examples=examples(15), deadline=None)
@given(hidden=st.integers(1, 3), kernel=st.sampled_from([1, 3]), frames=st.integers(1, 3), side=st.integers(1, 4),
       seed=st.integers(0, 1000))
def test_the_conv_lstm_kernel_equals_its_declared_step_scanned_frame_by_frame(hidden, kernel, frames, side, seed):
    """The fast kernel that trains the recurrence over frames (one batched step per frame) is held
    to the declared step (arspec.primitives.recurrence.ConvLstm) scanned along its wavefronts,
    values and gradients: the step is what every cached engine lowers."""
    from arspec_torch.declared import declared
    from arspec_torch.kernels import KERNELS

    from arspec.primitives.recurrence import ConvLstm
    cell = ConvLstm(hidden, kernel)
    generator = torch.Generator().manual_seed(seed)
    tensors = {"gate_bias": torch.randn(4 * hidden, generator=generator, dtype=torch.float64, requires_grad=True),
               "state_weight": (torch.randn(4 * hidden, hidden, kernel, kernel, generator=generator, dtype=torch.float64)
                                / kernel).requires_grad_()}
    pre = torch.randn(2, 4 * hidden, frames, side, side, generator=generator, dtype=torch.float64, requires_grad=True)
    fast, stepped = KERNELS["conv_lstm"](pre, **tensors), declared(pre, program=cell.program, **tensors)
    assert torch.allclose(fast, stepped, atol=1e-12)
    weights = torch.randn_like(fast)
    inputs = [pre, *tensors.values()]
    for a, b in zip(*[torch.autograd.grad((out * weights).sum(), inputs, allow_unused=True) for out in (fast, stepped)]):
        assert (a is None and (b is None or not b.any())) or (b is None and not a.any()) or torch.allclose(a, b, atol=1e-12)
