"""The interpreter's rewrites change cost, never values: a local context projected at its own rate
and added by broadcasting gives the same log-probabilities, samples and gradients as projecting
the repeat-upsampled context at every position, in 1-D (WaveNet's log-mel features) and 2-D
(PixelVAE's latent map), and a broadcast that tiles instead of repeating is caught."""
from __future__ import annotations

from pathlib import Path

import torch
from arspec_torch import fusion, kernels
from arspec_torch.cache import StepCall

import arspec

ROOT = Path(__file__).resolve().parent.parent
TEACHER = ROOT / "specs" / "wavenet_teacher.yaml"
STUDENT = ROOT / "specs" / "parallel_wavenet.yaml"
AR_PRIOR = ROOT / "specs" / "pixelvae_ar_prior.yaml"


def twins(path: Path, monkeypatch, overrides=()):
    """The same model (same seed, same weights) compiled with and without the rewrites, float64."""
    spec = arspec.load_spec(path, overrides=list(overrides))
    fused = arspec.compile(spec, seed=0, dtype="float64").eval()
    with monkeypatch.context() as m:
        m.setattr("arspec_torch.network.fuse", lambda calls, kept: calls)
        plain = arspec.compile(spec, seed=0, dtype="float64").eval()
    return fused, plain


def kinds(net) -> list[str]:
    return [c.kind for c in net.calls]


def test_teacher_projects_its_log_mel_features_at_frame_rate_with_equal_log_probs_and_gradients(monkeypatch):
    fused, plain = twins(TEACHER, monkeypatch, ["event.shape=[800]"])
    assert "upsample" not in kinds(fused.net) and kinds(fused.net).count("add_repeated") == 16
    assert "upsample" in kinds(plain.net) and "add_repeated" not in kinds(plain.net)
    x, context = fused.example_inputs(2, torch.Generator().manual_seed(1))
    lp_fused, lp_plain = fused.log_prob(x, **context), plain.log_prob(x, **context)
    torch.testing.assert_close(lp_fused, lp_plain, rtol=0, atol=1e-9)
    lp_fused.sum().backward()
    lp_plain.sum().backward()
    for (name, p), q in zip(fused.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-9, atol=1e-9, msg=name)


def test_student_samples_equal_with_and_without_the_rewrite(monkeypatch):
    fused, plain = twins(STUDENT, monkeypatch, ["event.shape=[800]"])
    assert all("upsample" not in kinds(f.net) for f in fused.flows)
    _, context = fused.example_inputs(1, torch.Generator().manual_seed(2))
    a = fused.sample(1, generator=torch.Generator().manual_seed(3), **context)
    b = plain.sample(1, generator=torch.Generator().manual_seed(3), **context)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


def test_a_latent_map_repeated_over_pixel_blocks_is_added_by_broadcast_in_2d(monkeypatch):
    fused, plain = twins(AR_PRIOR, monkeypatch)
    assert "add_repeated" in kinds(fused.decoder.net)
    x, _ = fused.example_inputs(2, torch.Generator().manual_seed(4))
    torch.manual_seed(5)
    a = fused.log_prob(x)
    torch.manual_seed(5)
    b = plain.log_prob(x)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-8)


def test_a_broadcast_that_tiles_instead_of_repeating_is_caught(monkeypatch):
    fused, plain = twins(TEACHER, monkeypatch, ["event.shape=[800]"])

    def tiled(*xs, factors):
        full = [v for v, f in zip(xs, factors) if f == 1]
        return kernels.add(*full, *[v.repeat(1, 1, f) for v, f in zip(xs, factors) if f > 1])

    monkeypatch.setitem(kernels.KERNELS, "add_repeated", tiled)
    x, context = fused.example_inputs(1, torch.Generator().manual_seed(1))
    assert not torch.allclose(fused.log_prob(x, **context), plain.log_prob(x, **context), atol=1e-6)


def test_add_repeated_equals_adding_the_repeated_tensor_in_every_rank():
    g = torch.Generator().manual_seed(0)
    for spatial, f in (((12,), 3), ((4, 6), 2), ((2, 4, 4), 2)):
        full = torch.randn(2, 3, *spatial, generator=g, dtype=torch.float64)
        other = torch.randn(2, 3, *spatial, generator=g, dtype=torch.float64)
        low = torch.randn(2, 3, *[s // f for s in spatial], generator=g, dtype=torch.float64)
        repeated = low
        for axis in range(len(spatial)):
            repeated = repeated.repeat_interleave(f, dim=2 + axis)
        torch.testing.assert_close(kernels.add_repeated(full, low, other, factors=(1, f, 1)), full + repeated + other)


def call(id: str, kind: str, *args: str, **attrs) -> StepCall:
    return StepCall(id, kind, args, (), attrs, 4, None, None)


def test_a_projection_read_by_anything_but_a_sum_with_a_full_rate_value_stays_as_it_is():
    calls = [call("up", "upsample", "ctx", factor=4, mode="repeat"),
             call("proj", "context_projection", "up", local=True, rank=1),
             call("conv", "masked_conv", "x"),
             call("sum", "add", "conv", "proj"),
             call("gate", "multiply", "sum", "proj")]
    assert fusion.fuse(calls, {"gate"}) == calls                       # `proj` is also multiplied
    summed = calls[:4]
    rewritten = fusion.fuse(summed, {"sum"})
    assert [c.kind for c in rewritten] == ["context_projection", "masked_conv", "add_repeated"]
    assert rewritten[0].args == ("ctx",) and rewritten[2].attrs["factors"] == (1, 4)
    assert fusion.fuse(summed, {"sum", "proj"}) == summed              # a kept projection keeps its resolution
    transposed = [call("up", "upsample", "ctx", factor=4, mode="transposed"), *summed[1:]]
    assert fusion.fuse(transposed, {"sum"}) == transposed              # a learned upsampling does not commute


def _peak_live(net) -> int:
    """The most values alive at once while the interpreter runs its calls (releases included)."""
    live, peak = set(), 0
    for call, released in zip(net.calls, net.release):
        live.add(call.id)
        peak = max(peak, len(live))
        live -= set(released)
    return peak


def test_a_sum_of_many_terms_runs_as_it_goes_with_equal_values_and_gradients(monkeypatch):
    """WaveNet's 30 skip outputs: with the running sum at most a few are alive at once (without it,
    every one until the sum), and log-probabilities and gradients are unchanged."""
    fused, plain = twins(ROOT / "specs" / "wavenet.yaml", monkeypatch, ["event.shape=[300]"])
    assert _peak_live(fused.net) < 10 < 30 < _peak_live(plain.net)
    assert max(len(c.args) for c in fused.net.calls if c.kind == "add") == 2
    x, _ = fused.example_inputs(2, torch.Generator().manual_seed(1))
    lp_fused, lp_plain = fused.log_prob(x), plain.log_prob(x)
    assert torch.allclose(lp_fused, lp_plain, rtol=1e-12)
    g_fused = torch.autograd.grad(lp_fused.sum(), list(fused.parameters()), allow_unused=True)
    g_plain = torch.autograd.grad(lp_plain.sum(), list(plain.parameters()), allow_unused=True)
    assert all((a is None and b is None) or torch.allclose(a, b, rtol=1e-9, atol=1e-12) for a, b in zip(g_fused, g_plain))


def test_running_sums_add_each_term_right_after_it_exists():
    calls = [StepCall(name, "activation", ("x",), (), {"fn": "tanh"}, 1, None, None) for name in ("a", "b", "c")]
    total = StepCall("s", "add", ("c", "a", "b"), (), {}, 1, None, None)
    out = fusion.running_sums([calls[0], calls[1], calls[2], total])
    assert [(c.id, c.args) for c in out] == [("a", ("x",)), ("b", ("x",)), ("s__sum1", ("a", "b")), ("c", ("x",)), ("s", ("s__sum1", "c"))]


def _saved_bytes(model, x) -> int:
    """Bytes autograd keeps for the backward pass of one training loss."""
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model.training_loss(x).mean()
    return total[0], loss


def test_activation_checkpointing_keeps_less_and_gives_the_same_gradients():
    """training.checkpoint: each repeated block's values are recomputed in the backward pass;
    autograd keeps a fraction of the bytes, and the gradients are those of the plain run."""
    spec = arspec.load_spec(ROOT / "specs" / "wavenet.yaml", overrides=["event.shape=[400]"])
    plain = arspec.compile(spec, seed=0, dtype="float64")
    light = arspec.compile(spec, seed=0, dtype="float64")
    light.net.checkpointing = True
    x, _ = plain.example_inputs(2, torch.Generator().manual_seed(0))
    kept_plain, loss_plain = _saved_bytes(plain, x)
    kept_light, loss_light = _saved_bytes(light, x)
    assert kept_light < kept_plain / 3 and len(light.net.segments) == 30
    g_plain = torch.autograd.grad(loss_plain, list(plain.parameters()), allow_unused=True)
    g_light = torch.autograd.grad(loss_light, list(light.parameters()), allow_unused=True)
    assert all((a is None and b is None) or torch.allclose(a, b, rtol=1e-10, atol=1e-12) for a, b in zip(g_plain, g_light))
