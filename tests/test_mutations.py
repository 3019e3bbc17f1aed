"""Mutation tests: each classic bug, injected into a random valid model, is caught — statically by
`analyze`, and (for implementation bugs) dynamically by comparing the module with the prediction."""
from __future__ import annotations

import re

import numpy as np
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import arspec
from arspec.dynamic import dynamic_check, generic_parameters, measure_columns, predicted_columns
from tests.helpers import spec_from
from tests.strategies import causal_sequences, examples, gated_stacks, masked_conv_stacks, multiscale_pyramids, recurrent_stacks

MUTATION = settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _leaks(text: str) -> bool:
    report = arspec.analyze(spec_from(text))
    return any("leak" in e.message for e in report.errors)


@MUTATION
@given(masked_conv_stacks(first_mask="B"))
def test_mask_b_in_the_first_layer_is_a_leak(text):
    assert _leaks(text)


@MUTATION
@given(causal_sequences(padding="same"), st.data())
def test_same_padding_is_reported_exactly_when_the_module_reads_the_future(text, data):
    spec = spec_from(text)
    model = arspec.compile(spec, seed=0)
    n = spec.ir.ctx.elements
    measured = measure_columns(model.double().eval(), np.arange(n))
    order = spec.ir.ctx.order(0)
    reads_future = bool((measured & (order[None, :] >= order[:, None])).any())
    assert _leaks(text) == reads_future


@MUTATION
@given(causal_sequences(input_shift=0))
def test_unshifted_input_embedding_is_a_leak(text):
    assert _leaks(text)


@MUTATION
@given(gated_stacks(shift=False))
def test_dropping_the_vertical_stack_shift_is_a_leak(text):
    assert _leaks(text)


@MUTATION
@given(recurrent_stacks(shift=False).filter(lambda t: "diagonal_lstm" in t))
def test_an_unshifted_mirrored_diagonal_lstm_is_a_leak(text):
    assert _leaks(text)


@MUTATION
@given(causal_sequences(), st.data())
def test_dilation_padding_off_by_one_is_a_leak(text, data):
    convs = re.findall(r"  (c\d+): \{op: causal_conv1d, inputs: \[\w+\], channels: \d+, kernel: (\d), dilation: (\d)", text)
    candidates = [(n, int(k), int(d)) for n, k, d in convs if int(k) > 1]
    assume(candidates)
    name, k, d = data.draw(st.sampled_from(candidates))
    reach = (k - 1) * d
    text = re.sub(rf"(  {name}: \{{op: causal_conv1d, .*?)padding: causal", rf"\1padding: [{reach - 1}, 1]", text)
    assert _leaks(text)


@MUTATION
@given(masked_conv_stacks().filter(lambda t: "shape: [1," not in t))
def test_swapping_the_channel_group_order_is_a_leak(text):
    groups = int(re.search(r"shape: \[(\d+),", text).group(1))
    h, w = map(int, re.search(r"shape: \[\d+, (\d+), (\d+)\]", text).groups())
    # generate B -> G -> R while the masks assume R -> G -> B
    order = [c * h * w + p for p in range(h * w) for c in reversed(range(groups))]
    text = text.replace("graph:\n", f"ordering: {{type: permutation, order: {order}}}\ngraph:\n", 1)
    assert _leaks(text)


@MUTATION
@given(multiscale_pyramids(first_mask="B"))
def test_a_sub_position_group_reading_itself_in_the_first_layer_is_a_leak(text):
    assert _leaks(text)


@MUTATION
@given(multiscale_pyramids(keep="[2, 1, 3]"))
def test_selecting_the_new_groups_in_the_wrong_order_is_a_leak(text):
    assert _leaks(text)


@MUTATION
@given(multiscale_pyramids(coarse_first=False))
def test_merging_the_coarse_prediction_into_the_wrong_sub_position_is_a_leak(text):
    assert _leaks(text)


@MUTATION
@given(masked_conv_stacks(coupled="channel_masks"))
def test_a_coupled_likelihood_over_channel_group_masks_is_a_leak(text):
    # G's parameters read R at the pixel, and R's term reads the whole pixel's parameters
    assert _leaks(text)


def _absent_connection(conn: np.ndarray, rng: np.random.Generator) -> tuple[int, ...] | None:
    """A random entry of a connectivity array that is off (a masked tap or channel pair)."""
    off = np.argwhere(~conn)
    if len(off) == 0:
        return None
    return tuple(int(v) for v in off[rng.integers(len(off))])


def _flip_an_absent_connection(spec, op: str, rng: np.random.Generator) -> str | None:
    """Turn on one absent connection of a random `op` node (in the spec, hence in the module too):
    the node's spec path, or None when it has every connection already."""
    nodes = [n for n in spec.ir.op_nodes() if n.spec.op == op]
    node = nodes[rng.integers(len(nodes))]
    conn = node.attrs["conv"].connectivity
    tap = _absent_connection(conn, rng)
    if tap is None:
        return None
    conn[tap] = True
    return node.spec_path


def _verdict_matches_what_the_module_reads(spec, seed: int):
    """A flipped bit may open a leak, or only add a dependency on an earlier element (not a bug):
    the static verdict must match what the mutated module really reads."""
    after = arspec.analyze(spec)
    model = arspec.compile(spec, seed=0).double().eval()
    generic_parameters(model, seed % 1000, spec.ir)
    measured = measure_columns(model, np.arange(spec.ir.ctx.elements))
    order = spec.ir.ctx.order(0)
    assert (not after.ok) == bool((measured & (order[None, :] >= order[:, None])).any())
    return after


@MUTATION
@given(masked_conv_stacks(), st.integers(0, 2**31 - 1))
def test_flipping_one_mask_bit_is_caught_statically(text, seed):
    spec = spec_from(text)
    path = _flip_an_absent_connection(spec, "masked_conv2d", np.random.default_rng(seed))
    assume(path is not None)
    after = _verdict_matches_what_the_module_reads(spec, seed)
    if not after.ok:
        # layers before the flipped one are unchanged and legal: every leak runs through the flipped
        # layer and is blamed on it or on a layer after it on the path
        layer = int(path.removeprefix("graph.l")) if path.startswith("graph.l") else None
        for e in after.errors:
            assert f"-> {path.removeprefix('graph.')} (line" in e.message, (str(e), path)
            blamed = e.path.removeprefix("graph.")
            assert blamed == "out" or layer is None or int(blamed.removeprefix("l")) >= layer, (str(e), path)


@MUTATION
@given(multiscale_pyramids(), st.integers(0, 2**31 - 1))
def test_flipping_one_group_mask_bit_is_judged_by_what_the_module_reads(text, seed):
    spec = spec_from(text)
    assume(_flip_an_absent_connection(spec, "group_masked_conv2d", np.random.default_rng(seed)) is not None)
    _verdict_matches_what_the_module_reads(spec, seed)


@MUTATION
@given(masked_conv_stacks(), st.integers(0, 2**31 - 1))
def test_a_backend_mask_that_disagrees_with_the_spec_is_caught_dynamically(text, seed):
    spec = spec_from(text)
    model = arspec.compile(spec, seed=0).eval()
    rng = np.random.default_rng(seed)
    convs = [n for n in spec.ir.op_nodes() if "conv" in n.attrs]
    node = convs[rng.integers(len(convs))]
    conn = node.attrs["conv"].connectivity
    tap = _absent_connection(conn, rng)
    assume(tap is not None)
    with torch.no_grad():                         # the backend bug: a mask bit the spec does not have
        getattr(model.net, f"{node.ident}__conv__mask")[tap] = 1.0
        getattr(model.net, f"{node.ident}__conv__weight")[tap] = 1.0
    columns = np.arange(spec.ir.ctx.elements)
    intended = predicted_columns(spec, columns)
    conn[tap] = True                              # what the corrupted module really computes
    corrupted = predicted_columns(spec, columns)
    conn[tap] = False
    result = dynamic_check(spec, model, columns=columns)
    measured_extra = {(e, s) for _, e, s in result.unexpected}
    assert measured_extra == {(int(e), int(s)) for e, s in np.argwhere(corrupted & ~intended)}
