"""Built-in primitives that declare their per-position step (`Primitive.step`): the footprint
derived from the step equals the primitive's own footprint on random dependency sets, so the
engines that lower the step (the numpy step, the C step, the static program) compute what the
analysis proved; a step that reads the wrong offset or channels is caught."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arspec.domains.concrete import ConcreteDeps
from arspec.domains.pattern import AttentionPattern, token_ranks
from arspec.primitives.attention import Attend
from arspec.primitives.conv import MaskedConv
from arspec.primitives.embedding import Embedding
from arspec.primitives.norm import ChannelNorm
from arspec.primitives.pointwise import Activation, Add, Concat, Dropout, Gate, Multiply, SelectChannels, Shift
from arspec.primitives.step import StepBuilder, footprint_of, step_program
from arspec.types import TensorType
from tests.strategies import examples


def random_deps(rng: np.random.Generator, channels: int, spatial: tuple[int, ...], columns: int) -> ConcreteDeps:
    rows = rng.random((channels, *spatial, columns)) < 0.3
    return ConcreteDeps(rows, np.arange(channels), np.arange(columns))


def dense(deps: ConcreteDeps) -> np.ndarray:
    """(C, *S, N): every channel's own row."""
    return deps.rows[deps.chan]


def primitives(draw: st.DrawFn, channels: int, rank: int) -> tuple[object, int]:
    """A built-in primitive that declares its step, and how many arguments it takes."""
    choice = draw(st.sampled_from(["activation", "add", "multiply", "concat", "gate", "select", "shift", "dropout", "conv", "embedding",
                                   "norm"]))
    if choice == "norm":                              # channels are even: one group or two
        return ChannelNorm(channels, draw(st.sampled_from([1, 2]))), 1
    if choice == "conv":
        return conv(draw, channels, rank), 1
    if choice == "embedding":                         # `channels` data channel groups, read as class indices
        return Embedding(channels, draw(st.integers(2, 4)), draw(st.integers(1, 8))), 1
    if choice == "activation":
        return Activation(draw(st.sampled_from(["relu", "elu", "tanh", "sigmoid", "identity"]))), 1
    if choice in ("add", "multiply", "concat"):
        return {"add": Add, "multiply": Multiply, "concat": Concat}[choice](), draw(st.integers(2, 3))
    if choice == "gate":
        return Gate(), 1
    if choice == "select":
        return SelectChannels(np.array(draw(st.lists(st.integers(0, channels - 1), min_size=1, max_size=2 * channels)))), 1
    if choice == "shift":
        return Shift(tuple(draw(st.integers(-2, 2)) for _ in range(rank))), 1
    return Dropout(0.5), 1


def conv(draw: st.DrawFn, channels: int, rank: int) -> MaskedConv:
    """A convolution that keeps the positions (pad before + after = the dilated kernel's reach),
    with a random connectivity that leaves at least one tap."""
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(rank))
    before = tuple(draw(st.integers(0, d * (k - 1))) for d, k in zip(dilation, kernel))
    after = tuple(d * (k - 1) - b for d, k, b in zip(dilation, kernel, before))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    connectivity = rng.random((draw(st.integers(1, 4)), channels, *kernel)) < 0.5
    connectivity.flat[0] = True
    return MaskedConv(connectivity, dilation, before, after, bias=draw(st.booleans()))


@st.composite
def cases(draw: st.DrawFn) -> tuple[object, list[ConcreteDeps], TensorType, list[TensorType]]:
    rank = draw(st.integers(1, 2))
    spatial = tuple(draw(st.integers(1, 4)) for _ in range(rank))
    channels = 2 * draw(st.integers(1, 3))
    primitive, arguments = primitives(draw, channels, rank)
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    arg_types = [TensorType(channels, spatial) for _ in range(arguments)]
    args = [random_deps(rng, channels, spatial, int(np.prod(spatial)) + 2) for _ in range(arguments)]
    return primitive, args, primitive.out_type(arg_types), arg_types


@settings(max_examples=examples(60), deadline=None)
@given(case=cases())
def test_each_built_in_primitives_step_has_exactly_its_own_footprint(case):
    primitive, args, out, arg_types = case
    program = step_program(primitive, arg_types, out)
    assert program is not None
    derived = footprint_of(program, args, out.channels, tuple(out.spatial), buffers=primitive.buffers())
    assert np.array_equal(dense(derived), dense(primitive.footprint(args, out, 0)))


def raster_pattern(groups: int, heads: int, spatial: tuple[int, ...], causal: str, window, stride, chunk) -> AttentionPattern:
    """An attention's pattern under the raster ordering of `groups` channels per position."""
    positions = int(np.prod(spatial))
    order = np.arange(positions)[None, :] * groups + np.arange(groups)[:, None]
    query, key = token_ranks(order, groups)
    return AttentionPattern(groups, heads, spatial, query[None], key[None], causal, window, True, stride, chunk)


@st.composite
def attentions(draw: st.DrawFn) -> tuple[Attend, list[ConcreteDeps], TensorType, list[TensorType]]:
    rank = draw(st.integers(1, 2))
    spatial = tuple(draw(st.integers(1, 4)) for _ in range(rank))
    groups, heads = draw(st.sampled_from([1, 2])), draw(st.sampled_from([1, 2]))
    channels = groups * heads * draw(st.integers(1, 2))
    window = (tuple((-draw(st.integers(0, 2)), draw(st.integers(0, 1))) for _ in range(rank)) if draw(st.booleans()) else None)
    pattern = raster_pattern(groups, heads, spatial, draw(st.sampled_from(["strict", "non_strict", "none"])), window,
                             draw(st.sampled_from([None, 2, 3])), draw(st.sampled_from([None, 2, 3])))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    arg_types = [TensorType(channels, spatial)] * 3
    args = [random_deps(rng, channels, spatial, int(np.prod(spatial)) + 2) for _ in range(3)]
    primitive = Attend(pattern)
    return primitive, args, primitive.out_type(arg_types), arg_types


@settings(max_examples=examples(40), deadline=None)
@given(case=attentions())
def test_an_attentions_step_has_exactly_its_own_footprint(case):
    """The step's attention (the query read at the position, keys and values over their history)
    follows the domain's rule for the pattern: windows, strides, chunks, grouped tokens."""
    primitive, args, out, arg_types = case
    program = step_program(primitive, arg_types, out)
    assert program is not None and program.history_args == (1, 2)
    derived = footprint_of(program, args, out.channels, tuple(out.spatial), pattern=primitive.pattern)
    assert np.array_equal(dense(derived), dense(primitive.footprint(args, out, 0)))


def test_an_attention_step_whose_query_is_read_one_position_back_is_caught():
    rng = np.random.default_rng(1)
    spatial, channels = (6,), 2
    primitive = Attend(raster_pattern(1, 1, spatial, "non_strict", None, None, None))
    mutant = type("Mutant", (Attend,), {"step": lambda self, b: b.attend(b.read(0, (-1,)), 1, 2, 1, 1, "non_strict")})(primitive.pattern)
    args = [random_deps(rng, channels, spatial, 8) for _ in range(3)]
    types = [TensorType(channels, spatial)] * 3
    out = primitive.out_type(types)
    expected = dense(primitive.footprint(args, out, 0))
    assert np.array_equal(dense(footprint_of(step_program(primitive, types, out), args, channels, spatial, pattern=primitive.pattern)),
                          expected)
    mutated = footprint_of(step_program(mutant, types, out), args, channels, spatial, pattern=primitive.pattern)
    assert not np.array_equal(dense(mutated), expected)


@pytest.mark.parametrize("wrong", ["offset", "channels"])
def test_a_step_that_reads_the_wrong_offset_or_channels_is_caught(wrong):
    """Mutants of Shift's and Gate's steps: the derived footprint no longer matches (a convolution
    whose taps are read at the wrong offsets is the same mutation as the Shift's)."""
    rng = np.random.default_rng(0)
    spatial, channels = (5,), 4
    args = [random_deps(rng, channels, spatial, 7)]
    if wrong == "offset":
        primitive: object = Shift((1,))
        mutant = type("Mutant", (Shift,), {"step": lambda self, b: b.read(0, tuple(self.by))})((1,))   # the sign flipped
    else:
        primitive = Gate()
        mutant = type("Mutant", (Gate,), {"step": lambda self, b: b.act("tanh", b.slice(b.read(0, (0,)), 0, b.arg_channels[0] // 2))})()
    out = primitive.out_type([TensorType(channels, spatial)])
    expected = dense(primitive.footprint(args, out, 0))
    assert np.array_equal(dense(footprint_of(step_program(primitive, [TensorType(channels, spatial)], out), args, out.channels, spatial)), expected)
    mutated = footprint_of(step_program(mutant, [TensorType(channels, spatial)], out), args, out.channels, spatial)
    assert not np.array_equal(dense(mutated), expected)


def test_gate_and_pick_refuse_what_they_cannot_take():
    b = StepBuilder(1, arg_channels=(3,))
    from arspec.primitives.step import StepError
    with pytest.raises(StepError, match="even number"):
        b.gate(b.read(0, (0,)))
    with pytest.raises(StepError, match="channels"):
        b.pick(b.read(0, (0,)), [3])
