"""Cached generation (derived from the IR) agrees with the training graph and with naive sampling."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from arspec_torch import ccache, cstep, stepplan
from arspec_torch.cstep import CStepProgram
from arspec_torch.staticstep import StaticStepProgram
from arspec_torch.stepplan import StepProgram
from hypothesis import HealthCheck, assume, given, settings

import arspec
from arspec.dynamic import generic_parameters
from tests.helpers import spec_from
from tests.strategies import causal_sequences, examples, gated_stacks, masked_conv_stacks

ROOT = Path(__file__).resolve().parent.parent
CASES = [
    ("wavenet.yaml", ["event.shape=[48]"]),
    ("wavenet_conditional.yaml", ["event.shape=[16]", "conditioning.features.upsample=8"]),
    ("gated_pixelcnn.yaml", ["event.shape=[1,7,7]"]),
    ("gated_pixelcnn_conditional.yaml", ["event.shape=[1,6,6]"]),
    ("pixelcnn.yaml", ["event.shape=[1,6,6]"]),
    ("pixelcnn_rgb.yaml", ["event.shape=[3,4,4]"]),
    ("pixelcnn_pp.yaml", ["event.shape=[3,4,4]"]),
]


@pytest.fixture(params=["c", "numpy"], ids=["C step", "numpy step"])
def step_engine(request, monkeypatch):
    """Both CPU step engines: the generated C (where a compiler exists) and the generated numpy."""
    monkeypatch.setenv("ARSPEC_STEP", request.param)
    if request.param == "c" and not cstep.c_step_available(np.dtype(np.float64)):
        pytest.skip("no C compiler here: the numpy step runs")
    return request.param


def _model(spec, seed: int = 0):
    # float64: the comparisons below are about the computation, not float32 rounding in deep stacks
    model = arspec.compile(spec, seed=seed, dtype=torch.float64).eval()
    generic_parameters(model, seed, spec.ir)   # non-zero biases everywhere: the classic source of mismatches
    return model


@pytest.mark.parametrize("batch", [3, 1], ids=["batch 3", "batch 1 (BLAS products with the bias in the call)"])
@pytest.mark.parametrize("name,overrides", CASES, ids=[c[0] for c in CASES])
def test_cached_and_naive_sampling_agree_and_match_the_training_graph(name, overrides, batch, step_engine):
    spec = arspec.load_spec(ROOT / "specs" / name, overrides=overrides)
    model = _model(spec)
    assert model.incremental is not None
    x, context = model.example_inputs(batch, torch.Generator().manual_seed(2))
    with torch.no_grad():
        cached = model.incremental.teacher_forced(model, x, **context)
        assert torch.allclose(cached, model(x, **context), atol=1e-9, rtol=1e-9)
    fast = model.sample(batch, generator=torch.Generator().manual_seed(7), cache=True, **context)
    slow = model.sample(batch, generator=torch.Generator().manual_seed(7), cache=False, **context)
    assert torch.equal(fast, slow)


CACHED_PROPERTY = settings(max_examples=examples(20), deadline=None, suppress_health_check=[HealthCheck.too_slow])


@CACHED_PROPERTY
@given(causal_sequences())
def test_cached_path_equals_training_path_for_random_sequence_models(text):
    _assert_cache_consistent(spec_from(text))


@CACHED_PROPERTY
@given(gated_stacks())
def test_cached_path_equals_training_path_for_random_gated_stacks(text):
    _assert_cache_consistent(spec_from(text))


@CACHED_PROPERTY
@given(masked_conv_stacks())
def test_cached_path_equals_training_path_for_random_masked_stacks(text):
    _assert_cache_consistent(spec_from(text))


def _assert_cache_consistent(spec) -> None:
    model = _model(spec)
    x, _ = model.example_inputs(2, torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.allclose(model.incremental.teacher_forced(model, x), model(x), atol=1e-9, rtol=1e-9)
    fast = model.sample(2, generator=torch.Generator().manual_seed(4), cache=True)
    slow = model.sample(2, generator=torch.Generator().manual_seed(4), cache=False)
    assert torch.equal(fast, slow)


def test_completion_keeps_the_known_half_and_both_paths_agree():
    spec = arspec.load_spec(ROOT / "specs" / "gated_pixelcnn.yaml", overrides=["event.shape=[1,6,6]"])
    model = _model(spec)
    given_image = torch.randint(0, 2, (1, 6, 6), generator=torch.Generator().manual_seed(0))
    known = torch.zeros(1, 6, 6, dtype=torch.bool)
    known[:, :3] = True
    fast = model.sample(4, generator=torch.Generator().manual_seed(1), given=given_image, known=known)
    slow = model.sample(4, generator=torch.Generator().manual_seed(1), given=given_image, known=known, cache=False)
    assert torch.equal(fast, slow)
    assert torch.equal(fast[:, 0, :3], given_image[0, :3].expand(4, -1, -1))


def test_audio_continuation_keeps_the_prompt():
    spec = arspec.load_spec(ROOT / "specs" / "wavenet.yaml", overrides=["event.shape=[32]"])
    model = _model(spec)
    prompt = torch.randint(0, 256, (32,), generator=torch.Generator().manual_seed(0))
    known = torch.arange(32) < 16
    out = model.sample(2, generator=torch.Generator().manual_seed(1), given=prompt, known=known)
    assert torch.equal(out[:, :16], prompt[:16].expand(2, -1))


def test_made_has_no_cache_and_still_samples_the_same():
    spec = arspec.load_spec(ROOT / "specs" / "made.yaml", overrides=["event.shape=[1,3,3]"])
    model = arspec.compile(spec)
    assert model.incremental is None
    a = model.sample(2, generator=torch.Generator().manual_seed(0), cache=True)
    b = model.sample(2, generator=torch.Generator().manual_seed(0), cache=False)
    assert torch.equal(a, b)


def test_the_cpu_step_plan_keeps_ring_buffers_that_do_not_grow_with_the_length():
    sizes = {}
    for length in (64, 2048):
        spec = arspec.load_spec(ROOT / "specs" / "wavenet.yaml", overrides=[f"event.shape=[{length}]"])
        model = arspec.compile(spec, seed=0).eval()
        assert model.incremental._planned(model)                # the compiled per-step plan runs on the CPU
        sizes[length] = model.incremental.plan.ring_bytes(1, 4)
    assert sizes[64] == sizes[2048] < 2**20                     # the largest ring is the 512-dilation's 513 steps
    plan = model.incremental.plan
    assert max(plan.ring.values()) == 513 and plan.lag[plan.output] == -1


def test_a_vertical_stack_wider_than_the_image_falls_back_to_the_torch_path_and_still_agrees():
    # with 7 columns the stacked vertical reach wraps past the end of a row: no fixed-lag plan
    spec = arspec.load_spec(ROOT / "specs" / "gated_pixelcnn.yaml", overrides=["event.shape=[1,7,7]"])
    model = _model(spec)
    assert model.incremental.plan is None
    fast = model.sample(2, generator=torch.Generator().manual_seed(3), cache=True)
    slow = model.sample(2, generator=torch.Generator().manual_seed(3), cache=False)
    assert torch.equal(fast, slow)


# -- the accelerators' static program: the CPU's plan as torch kernels at a position held on the device --

STATIC_CASES = [
    ("wavenet.yaml", ["event.shape=[48]"]),
    ("wavenet_conditional.yaml", ["event.shape=[16]", "conditioning.features.upsample=8"]),
    ("wavenet_teacher.yaml", ["event.shape=[32]", "conditioning.mel.upsample=8"]),
    ("gated_pixelcnn.yaml", ["event.shape=[1,12,12]"]),
    ("pixelcnn_rgb.yaml", ["event.shape=[3,8,8]"]),            # channels: the position recomputed per channel
    ("pixelcnn_pp.yaml", ["event.shape=[3,8,8]"]),             # coupled channels drawn by slicing, not masks
    ("video_pixel_network_small.yaml", ["event.shape=[3,1,8,8]"]),   # frame values recomputed between segments
]


def _static(model):
    model.incremental.engine = "static"          # what a CUDA device runs, here without the graph
    assert model.incremental.engine_for(model) == "static"
    return model


def test_the_static_step_issues_the_kernels_its_step_needs_and_no_more():
    """Every kernel of a step is a kernel of the captured CUDA graph: lowering the step IR must not
    cost more than rules written per kind did (WaveNet: about 20 per residual layer; a generic
    whole-tensor evaluator at one position had cost 103)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.calls += 1
            return func(*args, **(kwargs or {}))
    model = arspec.compile(arspec.load_spec(ROOT / "specs" / "wavenet.yaml", overrides=["event.shape=[64]"]), seed=0).eval()
    program = model.incremental._static_program(model, 2, {}, record=False)
    with torch.no_grad():
        program.step(torch.tensor([5]))
        with Count():
            program.step(torch.tensor([5]))
    assert Count.calls <= 24 * 30, Count.calls


@pytest.mark.parametrize("name,overrides", STATIC_CASES, ids=[c[0] for c in STATIC_CASES])
def test_the_static_step_program_matches_the_training_graph_and_naive_sampling(name, overrides):
    spec = arspec.load_spec(ROOT / "specs" / name, overrides=overrides)
    model = _static(_model(spec))
    x, context = model.example_inputs(3, torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(model.incremental.teacher_forced(model, x, **context), model(x, **context), atol=1e-9, rtol=1e-9)
    fast = model.sample(3, generator=torch.Generator().manual_seed(7), cache=True, **context)
    slow = model.sample(3, generator=torch.Generator().manual_seed(7), cache=False, **context)
    assert torch.equal(fast, slow) and not model.incremental.graphed


@settings(max_examples=examples(10), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(masked_conv_stacks())
def test_the_static_step_program_equals_the_training_path_for_random_masked_stacks(text):
    model = _model(spec_from(text))
    assume(model.incremental.plan is not None)   # no fixed-lag plan at this shape: the torch path serves it
    _static(model)
    x, _ = model.example_inputs(2, torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.allclose(model.incremental.teacher_forced(model, x), model(x), atol=1e-9, rtol=1e-9)
    fast = model.sample(2, generator=torch.Generator().manual_seed(4), cache=True)
    assert torch.equal(fast, model.sample(2, generator=torch.Generator().manual_seed(4), cache=False))


@pytest.mark.parametrize("corruption", ["ring slot one position late", "lag one step early"])
def test_a_corrupted_static_program_is_caught_by_the_training_graph_comparison(corruption, monkeypatch):
    spec = arspec.load_spec(ROOT / "specs" / "wavenet.yaml", overrides=["event.shape=[48]"])
    model = _static(_model(spec))
    plan = model.incremental.plan
    if corruption == "ring slot one position late":
        slots = plan.slots
        monkeypatch.setattr(plan, "slots", lambda call, i: (slots(call, i) + 1) % (plan.ring[call.args[i]] + 1))
    else:
        victim = next(c.id for c in plan.steps if c.kind == "masked_conv" and plan.lag[c.id] < 0)
        monkeypatch.setitem(plan.lag, victim, plan.lag[victim] - 1)
    x, _ = model.example_inputs(2, torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert not torch.allclose(model.incremental.teacher_forced(model, x), model(x), atol=1e-6, rtol=1e-6)


# -- channel groups: after each channel of a position, only the calls the output reads through that step's own values run again --

def _rgb(size: int = 8):
    return _model(arspec.load_spec(ROOT / "specs" / "pixelcnn_rgb.yaml", overrides=[f"event.shape=[3,{size},{size}]"]))


def test_each_channel_recomputes_the_horizontal_stack_and_head_but_not_the_vertical_stack():
    model = _rgb(16)                   # at 8 columns the vertical stack's flat reach wraps into the current row
    model.sample(1, cache=True)                                   # plans the cache
    plan = model.incremental.plan
    assert plan.output in plan.redo and plan.redo < {c.id for c in plan.steps}
    assert all("_h" in name or name.startswith(("h0", "head")) for name in plan.redo)
    assert not any("v_conv" in name or "v_out" in name for name in plan.redo)


def _parameters_used_and_expected(model, monkeypatch) -> tuple[torch.Tensor, torch.Tensor]:
    """The parameters each channel of each position was drawn from, and what the training graph
    gives at that channel for the finished images, both (B, C, positions, P)."""
    d = model.distribution
    seen, in_numpy, in_torch = [], d.sample_noise_numpy, d.sample_channel   # the CPU's plan draws in numpy, the static program in torch

    def numpy_spy(logits, noise):
        seen.append(torch.from_numpy(logits.copy()))
        return in_numpy(logits, noise)

    def torch_spy(params, x, channel, uniforms):
        seen.append(params[:, channel, 0].clone())
        return in_torch(params, x, channel, uniforms)

    monkeypatch.setattr(d, "sample_noise_numpy", numpy_spy)
    monkeypatch.setattr(d, "sample_channel", torch_spy)
    images = model.sample(2, generator=torch.Generator().manual_seed(5), cache=True)
    with torch.no_grad():
        expected = model(images)
    n, c = images.shape[:2]
    used = torch.stack(seen, 1).reshape(n, -1, c, expected.shape[-1]).transpose(1, 2)
    return used, expected.reshape(n, c, -1, expected.shape[-1])


ENGINES = ["plan", "static"]


def _rgb_on(engine: str):
    model = _rgb()
    if engine == "static":
        _static(model)
    return model


@pytest.mark.parametrize("engine", ENGINES)
def test_every_channel_is_drawn_from_what_the_training_graph_gives_for_the_finished_image(engine, monkeypatch):
    used, expected = _parameters_used_and_expected(_rgb_on(engine), monkeypatch)
    assert torch.allclose(used, expected, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("engine", ENGINES)
def test_channels_drawn_without_the_recompute_are_caught(engine, monkeypatch):
    if engine == "plan":
        build = StepProgram.__init__

        def once_per_position(self, *args, **kwargs):
            build(self, *args, **kwargs)
            redo, done = self.redo, set()
            self.redo = lambda p: None if p in done else (done.add(p), redo(p))   # G and B drawn from R's parameters

        monkeypatch.setattr(StepProgram, "__init__", once_per_position)
    else:
        real, last = StaticStepProgram.redo, []

        def before_r_only(self, q):
            if not last or last[-1] != int(q):
                last.append(int(q))
                real(self, q)

        monkeypatch.setattr(StaticStepProgram, "redo", before_r_only)
    used, expected = _parameters_used_and_expected(_rgb_on(engine), monkeypatch)
    assert torch.allclose(used[:, 0], expected[:, 0], atol=1e-9, rtol=1e-9)      # R: nothing of its position is known
    assert not torch.allclose(used[:, 1:], expected[:, 1:], atol=1e-6)


# -- sums of 1x1 convolutions of values local to the step: one product of the stacked weights --

STACKED_SUMS = {
    "WaveNet's skips (1-D)": ("wavenet.yaml", ["event.shape=[40]"], "stack_skip__add"),
    "a 1x1 and a 1-wide horizontal convolution of one position (2-D, two channel groups)": (None, None, "h1s__add"),
}
SUM_2D = """name: sums
event: {shape: [2, 4, 6]}
distribution: {type: categorical, classes: 3}
graph:
  h0c: {op: horizontal_conv2d, inputs: [x], channels: 8, kernel: 3, mask: A}
  h0g: {op: gated_tanh, inputs: [h0c]}
  h0:  {op: conv1x1, inputs: [h0g], channels: 4, mask: B}
  a1:  {op: conv1x1, inputs: [h0g], channels: 8, mask: B}
  a2:  {op: horizontal_conv2d, inputs: [h0], channels: 8, kernel: 1, mask: B}
  h1s: {op: add, inputs: [a1, a2]}
  h1g: {op: gated_tanh, inputs: [h1s]}
  out: {op: conv1x1, inputs: [h1g], channels: output, mask: B}
"""


@pytest.mark.parametrize("case", STACKED_SUMS, ids=list(STACKED_SUMS))
def test_a_sum_of_local_1x1_convolutions_is_one_stacked_product_and_changes_nothing(case, step_engine):
    name, overrides, total = STACKED_SUMS[case]
    spec = arspec.load_spec(ROOT / "specs" / name, overrides=overrides) if name else spec_from(SUM_2D)
    model = _model(spec)
    model.sample(1, cache=True)
    for batch, product in ((2, f"np.dot(WT_{total}, T_{total})"), (1, f"gemv(1.0, WT_{total}, T_{total}[:, 0], 1.0, b_{total})")):
        program = model.incremental._program(model, batch, model.example_context(batch), record=False)
        terms = program.stacked[total]
        assert len(terms) >= 2
        if step_engine == "numpy":
            assert product in program.source
        else:                                   # one product over the stacked inputs' whole width
            width = max(hi for _, hi in terms.values())
            products = [ops for code, ops in program.instructions() if code == cstep.Op.PRODUCT and ops[4] == program.register(total)]
            assert len(products) == 1 and products[0][1] == width
    _assert_cache_consistent(spec)


def test_stacked_terms_in_the_wrong_columns_are_caught_by_the_training_graph_comparison(monkeypatch):
    original = stepplan.stacked_sums

    def swapped(plan):
        out = {}
        for total, terms in original(plan).items():
            names = list(terms)
            out[total] = dict(zip(names, [terms[n] for n in names[1:] + names[:1]]))   # each term in its neighbour's columns
        return out

    monkeypatch.setattr(stepplan, "stacked_sums", swapped)
    model = _model(arspec.load_spec(ROOT / "specs" / "wavenet.yaml", overrides=["event.shape=[40]"]))
    x, _ = model.example_inputs(2, torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert not torch.allclose(model.incremental.teacher_forced(model, x), model(x), atol=1e-6, rtol=1e-6)


def test_a_batch_of_one_whose_products_drop_the_bias_is_caught(monkeypatch):
    monkeypatch.setenv("ARSPEC_STEP", "numpy")           # the numpy step's gemv (the C step's mutants are below)
    real = stepplan.gemv_for

    def without_bias(dtype):
        gemv = real(dtype)
        return lambda alpha, a, x, beta, y: gemv(alpha, a, x, 0.0, y)

    monkeypatch.setattr(stepplan, "gemv_for", without_bias)
    model = _model(arspec.load_spec(ROOT / "specs" / "wavenet.yaml", overrides=["event.shape=[40]"]))
    x, _ = model.example_inputs(1, torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert not torch.allclose(model.incremental.teacher_forced(model, x), model(x), atol=1e-6, rtol=1e-6)


# -- the C step: the engine that runs when a compiler exists, and its own mutants --

WAVENET_40 = ("wavenet.yaml", ["event.shape=[40]"])


def _teacher_forcing_matches(model, batch: int = 2) -> bool:
    x, _ = model.example_inputs(batch, torch.Generator().manual_seed(3))
    with torch.no_grad():
        return torch.allclose(model.incremental.teacher_forced(model, x), model(x), atol=1e-9, rtol=1e-9)


def test_the_c_step_runs_where_a_compiler_exists_and_the_numpy_step_otherwise(monkeypatch):
    model = _model(arspec.load_spec(ROOT / "specs" / WAVENET_40[0], overrides=WAVENET_40[1]))
    program = model.incremental._program(model, 2, {}, record=False)
    assert isinstance(program, CStepProgram) == cstep.c_step_available(np.dtype(np.float64))
    monkeypatch.setattr(cstep, "compiler", lambda: None)
    fallback = model.incremental._program(model, 2, {}, record=False)
    assert type(fallback) is StepProgram
    assert _teacher_forcing_matches(model)
    monkeypatch.setenv("ARSPEC_STEP", "numpy")
    assert not cstep.c_step_available(np.dtype(np.float64))


def test_a_runtime_that_does_not_build_is_warned_about_and_the_numpy_step_runs(monkeypatch):
    if ccache.compiler() is None:
        pytest.skip("no C compiler here")
    monkeypatch.setattr(cstep, "FLAGS", [*cstep.FLAGS, "-fno-such-flag-anywhere"])
    cstep._warn_once.cache_clear()
    with pytest.warns(RuntimeWarning, match="did not build"):
        assert not cstep.c_step_available(np.dtype(np.float64))
    model = _model(arspec.load_spec(ROOT / "specs" / WAVENET_40[0], overrides=WAVENET_40[1]))
    assert type(model.incremental._program(model, 2, {}, record=False)) is StepProgram
    assert _teacher_forcing_matches(model)


C_MUTANTS = {
    "exp's series cut after r^6": ("q = 1.0 / 720.0 + r * q;", "q = 1.0 / 720.0;"),
    "products that drop the bias": ("(bias ? bias[c0 + r] : 0)", "0"),
    "products that skip the last input row": ("for (int t = 0; t < k; t++)", "for (int t = 0; t < k - 1; t++)"),
    "products that drop the last item of a group of eight": ("KERNELS[nj](", "KERNELS[nj > 1 ? nj - 1 : 1]("),
    "the gate's sigmoid read from the tanh half": ("ar_sigmoid(a[j * 2 * width + width + c])", "ar_sigmoid(a[j * 2 * width + c])"),
}


@pytest.mark.parametrize("batch", [2, 1], ids=["batch 2 (gemm)", "batch 1 (gemv)"])
@pytest.mark.parametrize("mutant", C_MUTANTS, ids=list(C_MUTANTS))
def test_a_corrupted_c_step_is_caught_by_the_training_graph_comparison(mutant, batch, monkeypatch):
    if not cstep.c_step_available(np.dtype(np.float64)):
        pytest.skip("no C compiler here")
    if batch == 1 and "group of eight" in mutant:
        pytest.skip("one item: no group to drop from")
    old, new = C_MUTANTS[mutant]
    model = _model(arspec.load_spec(ROOT / "specs" / WAVENET_40[0], overrides=WAVENET_40[1]))
    assert _teacher_forcing_matches(model, batch)
    assert old in cstep.RUNTIME
    monkeypatch.setattr(cstep, "RUNTIME", cstep.RUNTIME.replace(old, new))
    assert not _teacher_forcing_matches(model, batch)


# -- drawing: the uniforms of many draws at once, the same numbers and no more --

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["categorical", "bernoulli"])
def test_noise_prepared_ahead_draws_what_the_direct_numpy_draw_does(name, dtype):
    from arspec_torch.distributions import Bernoulli, Categorical
    d = Categorical(7) if name == "categorical" else Bernoulli()
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((500, d.params_per_element)).astype(dtype) * 3
    uniforms = rng.random((500, d.noise_per_element)).astype(np.float32)
    assert np.array_equal(d.sample_noise_numpy(logits, d.noise_numpy(uniforms, np.dtype(dtype))), d.sample_numpy(logits, uniforms))


def test_a_cpu_generator_fills_one_large_draw_with_the_numbers_of_successive_small_ones():
    one = torch.rand((40, 3, 1, 5), generator=torch.Generator().manual_seed(9))
    generator = torch.Generator().manual_seed(9)
    assert torch.equal(one, torch.stack([torch.rand((3, 1, 5), generator=generator) for _ in range(40)]))


@pytest.mark.parametrize("batch", [1, 3])
def test_cached_sampling_leaves_the_generator_where_naive_sampling_does(batch):
    small = ["event.shape=[300]", "params.residual=4", "params.gate=8", "params.skip=4", "distribution.classes=5",
             "graph.stack.repeat.dilation.times=1"]                               # 300 draws: more than one chunk
    model = _model(arspec.load_spec(ROOT / "specs" / "wavenet.yaml", overrides=small))
    after = []
    for cache in (True, False):
        generator = torch.Generator().manual_seed(11)
        samples = model.sample(batch, generator=generator, cache=cache)
        after.append((samples, torch.rand(4, generator=generator)))
    assert torch.equal(after[0][0], after[1][0]) and torch.equal(after[0][1], after[1][1])


@pytest.mark.parametrize("threads", [2, 3])
def test_a_c_step_shared_among_threads_gives_what_one_thread_gives(threads, monkeypatch):
    """Each thread runs the step on its own items (8 items in 3 threads: 2, 3 and 3)."""
    if not cstep.c_step_available(np.dtype(np.float64)):
        pytest.skip("no C compiler here")
    monkeypatch.setattr(cstep, "step_threads", lambda batch: threads)
    wavenet = _model(arspec.load_spec(ROOT / "specs" / "wavenet.yaml", overrides=["event.shape=[48]"]))
    fast = wavenet.sample(8, generator=torch.Generator().manual_seed(7), cache=True)
    assert torch.equal(fast, wavenet.sample(8, generator=torch.Generator().manual_seed(7), cache=False))
    rgb = _rgb(16)                                           # R->G->B: a redo before each channel
    shared = rgb.sample(8, generator=torch.Generator().manual_seed(7))
    for model in (wavenet, rgb):
        assert model.incremental.engine_for(model) == "plan"
        assert model.incremental._program(model, 8, {}, record=False).threads == threads
        assert _teacher_forcing_matches(model, batch=8)
    monkeypatch.setattr(cstep, "step_threads", lambda batch: 1)
    assert torch.equal(shared, rgb.sample(8, generator=torch.Generator().manual_seed(7)))


C_SAMPLING_MUTANTS = {
    "encoded without the offset (categorical)": ("pixelcnn", "(real)level * (real)scale + (real)offset", "(real)level * (real)scale"),
    "no redo before the draw (the output reads its own position's step)": ("gated", "rt_step(redo, p, n);", ";"),
    "each item drawn with its neighbour's noise (categorical)": ("wavenet", "((p - p0) * B + j) * per_element", "((p - p0) * B + (B - 1 - j)) * per_element"),
    "the Bernoulli threshold reversed": ("gated", "level = g[0] < (real)1.0", "level = g[0] > (real)1.0"),
    "the temperature ignored": ("wavenet", "real v = (temperature != 1.0 ? l[c] / t : l[c]) + g[c];", "real v = l[c] + g[c];"),
}


@pytest.mark.parametrize("mutant", C_SAMPLING_MUTANTS, ids=list(C_SAMPLING_MUTANTS))
def test_a_corrupted_c_sampling_loop_is_caught_by_naive_sampling(mutant, monkeypatch):
    """The loop that draws in C (one channel group, categorical or Bernoulli) against the naive loop."""
    if not cstep.c_step_available(np.dtype(np.float64)):
        pytest.skip("no C compiler here")
    model_name, old, new = C_SAMPLING_MUTANTS[mutant]
    spec = {"wavenet": lambda: arspec.load_spec(ROOT / "specs" / "wavenet.yaml", overrides=["event.shape=[40]"]),
            "gated": lambda: arspec.load_spec(ROOT / "specs" / "gated_pixelcnn.yaml", overrides=["event.shape=[1,8,8]"]),  # 7 columns: no plan
            "pixelcnn": lambda: arspec.load_spec(ROOT / "specs" / "pixelcnn.yaml", overrides=[
                "event.shape=[1,7,7]", "distribution.type=categorical", "distribution.classes=4"])}[model_name]()
    model = _model(spec)
    temperature = 0.7 if "temperature" in mutant else 1.0

    def agree() -> bool:
        fast = model.sample(2, generator=torch.Generator().manual_seed(5), temperature=temperature)
        return torch.equal(fast, model.sample(2, generator=torch.Generator().manual_seed(5), cache=False, temperature=temperature))

    assert agree()
    assert old in cstep.RUNTIME
    monkeypatch.setattr(cstep, "RUNTIME", cstep.RUNTIME.replace(old, new))
    assert not agree()


def test_a_kept_program_is_used_again_only_while_the_weights_are_the_same():
    model = _model(arspec.load_spec(ROOT / "specs" / "wavenet.yaml", overrides=["event.shape=[40]"]))

    def both() -> tuple[torch.Tensor, torch.Tensor]:
        return (model.sample(2, generator=torch.Generator().manual_seed(3)),
                model.sample(2, generator=torch.Generator().manual_seed(3), cache=False))

    first, naive = both()
    assert torch.equal(first, naive)
    kept = model.incremental._program(model, 2, {}, record=False)
    assert model.incremental._program(model, 2, {}, record=False) is kept       # the same weights: kept
    again, _ = both()
    assert torch.equal(again, first)                                            # its rings were cleared
    with torch.no_grad():
        for parameter in model.net.parameters():                               # in place: new versions
            parameter.neg_()
    assert model.incremental._program(model, 2, {}, record=False) is not kept
    changed, naive = both()
    assert torch.equal(changed, naive) and not torch.equal(changed, first)
