"""Attention: causal self-attention under any ordering. Its footprint is exact in both domains
(measured == predicted for random stacks under every ordering type, the verdict equals a
black-box oracle's), fully masked queries give zeros (never NaN), the key-value cache equals
naive generation, and each classic attention bug is caught."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from arspec_torch import kernels
from hypothesis import HealthCheck, given, settings

import arspec
from arspec.dynamic import dynamic_check, measure_columns
from arspec.ordering import compute_raster
from tests.helpers import assert_measured_equals_predicted, problems_of, spec_from
from tests.strategies import attention_stacks, examples

PROPERTY = settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.too_slow])

SNAIL = """
name: snail
event: {{shape: [{groups}, {h}, {w}]}}
distribution: {{type: categorical, classes: 4}}
ordering: {{type: raster}}
graph:
  input: {{op: masked_conv2d, inputs: [x], channels: {width}, kernel: 3, mask: A, activation: elu}}
  pos:   {{op: positions, inputs: [input], kind: coordinates}}
  feat:  {{op: concat, inputs: [input, pos]}}
  att:   {{op: causal_attention, inputs: [feat, x], causal: {causal}, heads: 2, key_channels: 4, channels: {width}, residual: input{extra}}}
  out:   {{op: conv1x1, inputs: [att], channels: output, mask: B}}
"""

TEXT = """
name: text
event: {{shape: [{t}]}}
distribution: {{type: categorical, classes: 16}}
ordering: {{type: raster}}
graph:
  embed: {{op: embedding, inputs: [x], channels: 16, shift: {shift}}}
  pos:   {{op: positions, inputs: [embed], kind: sinusoidal, channels: 16}}
  h:     {{op: add, inputs: [embed, pos]}}
  att:   {{op: causal_attention, inputs: [h], causal: {causal}, heads: 2, key_channels: 8, channels: 16, residual: h{extra}}}
  out:   {{op: conv1x1, inputs: [att], channels: output}}
"""


def snail(groups: int = 3, h: int = 4, w: int = 4, width: int = 6, causal: str = "strict", extra: str = "") -> str:
    return SNAIL.format(groups=groups, h=h, w=w, width=width, causal=causal, extra=extra)


def text(t: int = 10, causal: str = "non_strict", shift: int = 1, extra: str = "") -> str:
    return TEXT.format(t=t, causal=causal, shift=shift, extra=extra)


def _leak(source: str) -> str:
    report = arspec.analyze(spec_from(source))
    return next((e.message for e in report.errors if "leak" in e.message), "")


def _oracle_reads_the_future(spec) -> bool:
    """Black box: does any element's output change when an element not before it changes?"""
    model = arspec.compile(spec, seed=0).double().eval()
    measured = measure_columns(model, np.arange(spec.ir.ctx.elements))
    order = spec.ir.ctx.order(0)
    return bool((measured & (order[None, :] >= order[:, None])).any())


# -- exact footprints ---------------------------------------------------------------------------
@PROPERTY
@given(attention_stacks())
def test_attention_stacks_under_every_ordering_measured_equals_predicted(source):
    assert_measured_equals_predicted(spec_from(source))


@PROPERTY
@given(attention_stacks(strict_on_raw=False))
def test_the_verdict_on_attention_stacks_equals_a_black_box_oracle(source):
    spec = spec_from(source)
    assert (not arspec.analyze(spec).ok) == _oracle_reads_the_future(spec)


@pytest.mark.parametrize("groups, extra", [(1, ""), (3, ""), (1, ", window: [[-3, 0], [-2, 2]]"), (3, ", channel_groups: 1")])
def test_the_offset_domain_agrees_with_the_per_position_one_inside_the_image(groups, extra):
    """At 48x48 (past the per-position limit) attention is analysed as a half-space of offsets;
    every interior element's receptive field equals the one the per-position domain finds."""
    from arspec.analysis.propagate import concrete_data, offset_data, propagate, term_deps
    source = snail(groups=groups, h=48, w=48, extra=extra)
    spec = spec_from(source)
    ir = spec.ir
    offsets = term_deps(ir, propagate(ir, offset_data(ir))).element_offsets(ir.ctx.groups, ir.ctx.params_per_element)
    origin = np.array(term_deps(ir, propagate(ir, offset_data(ir))).origin)
    centre = (24, 24)
    targets = [np.ravel_multi_index((g,) + centre, ir.ctx.event) for g in range(groups)]
    for g, target in enumerate(targets):
        # the exact reads of the target, one source column block at a time
        exact = np.zeros(ir.ctx.elements, dtype=bool)
        for start in range(0, ir.ctx.elements, 1600):
            cols = np.arange(start, min(ir.ctx.elements, start + 1600))
            table = term_deps(ir, propagate(ir, concrete_data(ir, cols))).element_table(ir.ctx.groups, ir.ctx.params_per_element, False)
            exact[cols] = table[target]
        predicted = np.zeros(ir.ctx.event, dtype=bool)
        for *box, c in zip(*np.nonzero(offsets[g, 0])):
            p = np.array(centre) + np.array(box) - origin
            if np.all((p >= 0) & (p < 48)):
                predicted[(c, *p)] = True
        assert np.array_equal(predicted.reshape(-1), exact), extra
    # the analysis uses the offset domain at this size, and finds no leak
    report = arspec.analyze(spec)
    assert report.domain == "offsets"
    assert report.ok == (groups == 1 or "channel_groups" not in extra)


def test_a_256x256_attention_model_is_analysed_in_the_offset_domain_quickly():
    import time
    spec = spec_from(snail(groups=3, h=256, w=256))
    start = time.perf_counter()
    report = arspec.analyze(spec)
    assert report.ok and report.domain == "offsets"
    assert time.perf_counter() - start < 20


# -- the rule relative to the ordering ----------------------------------------------------------
def test_strict_attention_over_raw_keys_is_autoregressive_and_non_strict_is_a_leak():
    assert arspec.analyze(spec_from(snail())).ok
    message = _leak(snail(causal="non_strict"))
    assert "reads itself" in message or "reads element" in message
    assert "node 'att'" in message


def test_pixel_tokens_under_channel_groups_leak_and_grouped_tokens_do_not():
    assert arspec.analyze(spec_from(snail(groups=3))).ok
    message = _leak(snail(groups=3, extra=", channel_groups: 1"))
    assert "node 'att'" in message


def test_strict_attention_keeps_the_elements_of_one_multiscale_group_apart():
    source = snail(groups=1, h=4, w=4).replace("ordering: {type: raster}", "ordering: {type: multiscale, base: 2}")
    source = source.replace("mask: A, activation: elu", "mask: A, activation: elu, channel_groups: 1")
    spec = spec_from(source.replace("  input: {op: masked_conv2d, inputs: [x], channels: 6, kernel: 3, mask: A, activation: elu, channel_groups: 1}",
                                    "  input: {op: positions, inputs: [x], kind: learned, channels: 6}"))
    assert spec.ir.ctx.orders[0].max() < 16
    assert arspec.analyze(spec).ok
    assert_measured_equals_predicted(spec)


@pytest.mark.parametrize("extra", [", stride: 4", ", chunk: 5", ", stride: 2, chunk: 8"])
def test_strided_and_block_patterns_are_exact_and_stay_inside_the_causal_set(extra):
    spec = spec_from(snail(groups=3, h=4, w=4, extra=extra))
    assert arspec.analyze(spec).ok
    assert_measured_equals_predicted(spec)
    table = arspec.analyze(spec_from(snail(groups=1, h=4, w=4, extra=extra))).dependencies
    full = arspec.analyze(spec_from(snail(groups=1, h=4, w=4))).dependencies
    assert table is not None and full is not None and (table <= full).all() and table.sum() < full.sum()


def test_a_window_pattern_only_removes_keys():
    wide = spec_from(snail(extra=", window: [[-1, 1], [-1, 1]]"))
    assert arspec.analyze(wide).ok
    assert_measured_equals_predicted(wide)


def test_non_causal_attention_on_the_data_path_is_a_leak():
    assert "node 'att'" in _leak(snail(causal="none"))


# -- numerics -----------------------------------------------------------------------------------
def test_a_query_with_no_key_gets_zeros_not_nan_in_both_passes():
    from arspec_torch.kernels import attend
    q, k, v = (torch.randn(2, 4, 5, requires_grad=True) for _ in range(3))
    ranks = torch.arange(5)[None]
    out = attend(q, k, v, ranks, ranks, groups=1, heads=2, causal="strict", window=None, dropout=0.0, active=0, training=False)
    assert torch.equal(out[:, :, 0], torch.zeros(2, 4))
    out.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


def test_one_key_means_the_output_is_that_value_whatever_the_query():
    from arspec_torch.kernels import attend
    q, k, v = torch.randn(1, 2, 3), torch.randn(1, 2, 3), torch.randn(1, 2, 3)
    ranks = torch.arange(3)[None]
    out = attend(q, k, v, ranks, ranks, groups=1, heads=1, causal="strict", window=None, dropout=0.0, active=0, training=False)
    assert torch.allclose(out[:, :, 1], v[:, :, 0])


def test_training_with_attention_dropout_keeps_the_mask():
    spec = spec_from(text(extra=", dropout: 0.5"))
    model = arspec.compile(spec, seed=0).double().train()
    x = torch.randint(0, 16, (1, 10))
    torch.manual_seed(0)
    base = model(x)
    later = x.clone()
    later[0, 6] = (later[0, 6] + 1) % 16
    torch.manual_seed(0)
    moved = model(later)
    assert torch.equal(base[0, :7], moved[0, :7])


# -- cached generation --------------------------------------------------------------------------
@pytest.mark.parametrize("source", [text(12), text(12, causal="strict"), snail(groups=3, h=3, w=4),
                                    snail(groups=1, h=3, w=3, extra=", window: [[-1, 0], [-1, 1]]"),
                                    text(12, extra=", stride: 3"), text(12, extra=", chunk: 4")])
def test_the_key_value_cache_equals_naive_generation_and_the_training_graph(source):
    spec = spec_from(source)
    model = arspec.compile(spec, seed=0).eval()
    assert type(model.incremental.cache).__name__ == "WindowCache"
    naive = model.sample(3, generator=torch.Generator().manual_seed(7), cache=False)
    cached = model.sample(3, generator=torch.Generator().manual_seed(7))
    assert torch.equal(naive, cached)
    x, _ = model.example_inputs(4, torch.Generator().manual_seed(1))
    assert torch.allclose(model.incremental.teacher_forced(model, x), model(x), atol=1e-5)


# -- the bug catalogue at the backend level: each is caught by the dynamic check ---------------
def _kernel_bug(monkeypatch, bug: str) -> None:
    """Patch the torch kernel with one classic attention bug."""
    import torch.nn.functional as F
    from arspec_torch import kernels

    original = kernels.attention_allowed

    def allowed(query_rank, key_rank, coords, *, groups, causal, window, stride=None, chunk=None):
        if bug == "window_outside_causal":           # the window applied instead of intersected
            causal = "none"
        return original(query_rank, key_rank, coords, groups=groups, causal=causal, window=window, stride=stride, chunk=chunk)

    def attend(q, k, v, query_rank, key_rank, coords=None, *, groups, heads, causal, window, dropout, active, training,
               stride=None, chunk=None, plain_causal=False):
        m = active % query_rank.shape[0]
        mask = allowed(query_rank[m], key_rank[m], coords, groups=groups, causal=causal, window=window, stride=stride, chunk=chunk)
        qt, kt, vt = (kernels.attention_tokens(t, groups, heads) for t in (q, k, v))
        if bug == "fill_without_start_mask":         # -1e9 fill: a row with no key averages every key
            scores = (qt @ kt.transpose(-1, -2)) / qt.shape[-1] ** 0.5
            out = torch.softmax(scores.masked_fill(~mask, -1e9), dim=-1) @ vt
        elif bug == "mask_dropped_with_dropout":     # the non-fused path forgets the mask when dropout is configured
            out = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=None if dropout > 0 else mask)
        else:
            out = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask | ~mask.any(1, keepdim=True))
            out = out * mask.any(1)[:, None]
        return kernels.attention_untokens(out, groups, tuple(q.shape[2:]))

    monkeypatch.setattr(kernels, "attention_allowed", allowed)
    monkeypatch.setitem(kernels.KERNELS, "attend", attend)


@pytest.mark.parametrize("bug, source", [
    ("fill_without_start_mask", text(8, causal="strict", shift=0).replace("inputs: [h], causal", "inputs: [pos, h], causal")
     .replace(", residual: h", "")),
    ("mask_dropped_with_dropout", text(8, extra=", dropout: 0.1")),
    ("window_outside_causal", text(8, extra=", window: [[-2, 2]]")),
])
def test_each_backend_attention_bug_is_caught_by_the_dynamic_check(monkeypatch, bug, source):
    spec = spec_from(source)
    assert arspec.analyze(spec).ok
    assert dynamic_check(spec, arspec.compile(spec, seed=0)).agrees
    _kernel_bug(monkeypatch, bug)
    result = dynamic_check(spec, arspec.compile(spec, seed=0))
    assert not result.agrees and result.unexpected


@pytest.mark.parametrize("value_channels", [8, 16, 4], ids=["keys as wide as values", "values wider", "keys wider"])
@pytest.mark.parametrize("causal", ["strict", "non_strict"])
def test_plain_causal_attention_runs_fused_and_equals_the_masked_path(causal, value_channels, monkeypatch):
    """Raster tokens under the bare causal rule take the fused kernel (is_causal, no T x T mask),
    with one head size for queries, keys and values whatever the spec's key and value widths
    (unequal sizes would send SDPA to its math path, which holds the T x T weights); values and
    gradients equal the explicit-mask path."""
    torch.manual_seed(0)
    q, k = (torch.randn(2, 8, 3, 7, dtype=torch.float64, requires_grad=True) for _ in range(2))
    v = torch.randn(2, value_channels, 3, 7, dtype=torch.float64, requires_grad=True)
    ranks = torch.arange(21).reshape(1, -1)
    options = dict(groups=1, heads=2, causal=causal, window=None, dropout=0.0, active=0, training=False)
    sizes = []
    fused_kernel = F.scaled_dot_product_attention

    def recorded(query, key, value, **kw):
        sizes.append({query.shape[-1], key.shape[-1], value.shape[-1]})
        return fused_kernel(query, key, value, **kw)
    monkeypatch.setattr(F, "scaled_dot_product_attention", recorded)
    fused = kernels.attend(q, k, v, ranks, ranks, None, plain_causal=True, **options)
    assert sizes and all(len(s) == 1 for s in sizes)
    masked = kernels.attend(q, k, v, ranks, ranks, None, **options)
    assert torch.allclose(fused, masked, atol=1e-12)
    grads = torch.autograd.grad(fused.square().sum(), (q, k, v))
    expected = torch.autograd.grad(masked.square().sum(), (q, k, v))
    assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(grads, expected))
    spec = spec_from(text(8, causal=causal, shift=0 if causal == "strict" else 1))
    assert all(c.primitive.plain_causal for n in spec.ir.op_nodes() for c in n.program.calls if c.primitive.kind == "attend")


def test_a_fused_strict_path_that_keeps_the_diagonal_is_caught(monkeypatch):
    spec = spec_from(snail(groups=1))                       # strict attention whose keys read x itself
    assert arspec.analyze(spec).ok and dynamic_check(spec, arspec.compile(spec, seed=0)).agrees
    monkeypatch.setattr(kernels, "causal_attention", lambda q, k, v, *, strict, dropout=0.0:
                        F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True))
    result = dynamic_check(spec, arspec.compile(spec, seed=0))
    assert not result.agrees and result.unexpected


def test_top_left_alignment_in_cached_decoding_is_caught_against_the_training_graph(monkeypatch):
    """is_causal aligns a rectangular mask top-left: one new query over p + 1 cached keys then
    attends to key 0 only. The training graph (square mask) is unaffected; the check that runs
    the cache teacher-forced against it catches the mutant (in the key history every cached
    engine reads)."""
    from arspec_torch.keyhistory import KeyHistory
    spec = spec_from(text(8))
    assert dynamic_check(spec, arspec.compile(spec, seed=0), cache=True).agrees
    history = KeyHistory.__init__

    def first_key_only(self, *args):
        history(self, *args)
        self.hi = np.minimum(self.hi, self.lo + 1)
        self.masks = [None if m is None else m[:, :1] for m in self.masks]

    monkeypatch.setattr(KeyHistory, "__init__", first_key_only)
    result = dynamic_check(spec, arspec.compile(spec, seed=0), cache=True)
    assert "cached generation disagrees" in result.cache_problem
    model = arspec.compile(spec, seed=0).eval()
    naive = model.sample(4, generator=torch.Generator().manual_seed(3), cache=False)
    assert not torch.equal(naive, model.sample(4, generator=torch.Generator().manual_seed(3)))


# -- positions and spec errors ------------------------------------------------------------------
def test_positions_read_no_data_and_sinusoids_differ_per_position():
    spec = spec_from(text(6, causal="non_strict"))
    model = arspec.compile(spec, seed=0)
    table = next(b for name, b in model.net.named_buffers() if name.endswith("__table"))
    assert table.shape == (16, 6) and len({tuple(col.tolist()) for col in table.T}) == 6
    assert_measured_equals_predicted(spec)


@pytest.mark.parametrize("change, field, words", [
    (", window: [[-1, 0], [0, 0]]", "graph.att.window", "one [lo, hi]"),
    (", window: [[1, 0]]", "graph.att.window", "lo <= hi"),
    (", channel_groups: 2", "graph.att.channel_groups", "channel_groups must be 1"),
])
def test_attention_spec_errors_name_the_field(change, field, words):
    problems = problems_of(text(6, extra=change))
    assert any(field in p and words in p for p in problems), problems


def test_raster_is_the_offset_domain_rule():
    spec = spec_from(snail())
    pattern = next(c.primitive.pattern for n in spec.ir.op_nodes() for c in n.program.calls if c.primitive.kind == "attend")
    assert pattern.raster and np.array_equal(spec.ir.ctx.orders[0], compute_raster(spec.ir.ctx.event))


def test_layer_norm_follows_the_channel_groups_and_pooling_them_is_a_leak():
    source = snail(groups=3).replace("  out:   {op: conv1x1", "  norm:  {op: layer_norm, inputs: [att]}\n  out:   {op: conv1x1, inputs: [norm]").replace("inputs: [norm], inputs: [att]", "inputs: [norm]")
    spec = spec_from(source)
    assert arspec.analyze(spec).ok
    assert_measured_equals_predicted(spec)
    assert _leak(source.replace("{op: layer_norm, inputs: [att]}", "{op: layer_norm, inputs: [att], channel_groups: 1}"))


def test_an_attention_layer_too_large_to_allocate_is_refused_before_allocating():
    from arspec.backends import BackendError
    spec = spec_from(snail(groups=3, h=256, w=256))
    assert arspec.analyze(spec).ok
    with pytest.raises(BackendError, match="attends over 196,608 tokens"):
        arspec.compile(spec)
