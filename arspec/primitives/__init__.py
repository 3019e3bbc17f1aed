"""The backend primitives: the small set of operations in which every op states its semantics.
A backend implements these kinds and nothing else (see docs/extending.md for the table)."""
from arspec.primitives.attention import Attend, Positions
from arspec.primitives.base import Param, Primitive, Taps, same_position
from arspec.primitives.context import ContextProjection, Upsample
from arspec.primitives.conv import MaskedConv
from arspec.primitives.dense import Flatten, MaskedDense, degree_mask
from arspec.primitives.embedding import Embedding, channel_group
from arspec.primitives.norm import ChannelNorm
from arspec.primitives.observe import ObserveGate
from arspec.primitives.ordered import ElementLinear, ElementScale, OrderedPrefixLinear
from arspec.primitives.pointwise import Activation, Add, Concat, Dropout, Gate, Multiply, SelectChannels, Shift
from arspec.primitives.recurrence import ConvLstm, DiagonalLstm, RowLstm
from arspec.primitives.resolution import DepthToSpace, SpaceToDepth, interleave_index

PRIMITIVES: dict[str, type[Primitive]] = {p.kind: p for p in (
    MaskedConv, MaskedDense, Embedding, Shift, Activation, Add, Multiply, Concat, Gate, SelectChannels, Dropout,
    SpaceToDepth, DepthToSpace, ContextProjection, Upsample, RowLstm, DiagonalLstm, ConvLstm, OrderedPrefixLinear, ElementLinear, ElementScale, ObserveGate, Flatten, Attend, Positions, ChannelNorm)}

__all__ = ["PRIMITIVES", "Activation", "Add", "Attend", "ChannelNorm", "Concat", "ContextProjection", "DepthToSpace", "Dropout", "ElementLinear", "ElementScale", "Embedding", "Flatten",
           "ConvLstm", "DiagonalLstm", "Gate", "MaskedConv", "RowLstm", "MaskedDense", "Multiply", "ObserveGate", "OrderedPrefixLinear", "Param", "Positions", "Primitive",
           "SelectChannels", "Shift", "SpaceToDepth", "Taps", "Upsample", "channel_group", "degree_mask",
           "interleave_index", "same_position"]
