"""IR nodes and the graph that holds them (a networkx DiGraph, edges from input to consumer).

Every node that computes has a `program` of primitives (its op's semantics plus conditioning,
activation and residual); backends, the analysis and cached generation all read that program."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import networkx as nx

from arspec.distributions import DistributionInfo
from arspec.errors import Location
from arspec.ops.base import LowerContext, Op
from arspec.primitives import Param
from arspec.primitives.program import Call, Program
from arspec.types import TensorType

NodeKind = Literal["data", "context", "op"]


@dataclass(frozen=True)
class SpecSource:
    """Where an IR came from: what a checkpoint stores to rebuild the model."""

    text: str
    filename: str
    overrides: tuple[str, ...] = ()


@dataclass
class IRNode:
    """One tensor-producing node: the data x, a context input, or an op with its program."""

    name: str
    kind: NodeKind
    type: TensorType
    ident: str = ""                                        # unique Python identifier (parameters, code)
    op: Op | None = None
    spec: Any = None
    attrs: dict[str, Any] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)       # main inputs then op extras
    conditions: list[str] = field(default_factory=list)
    residual: str | None = None
    location: Location | None = None
    spec_path: str = ""
    program: Program | None = None
    field_locations: dict[str, Location] = field(default_factory=dict)   # where `residual:`, `inputs:`, ... were written

    @property
    def all_inputs(self) -> list[str]:
        """The node's inputs in the order its program binds them."""
        return self.inputs + self.conditions + ([self.residual] if self.residual else [])

    @property
    def parameters(self) -> int:
        return self.program.parameters if self.program else 0


@dataclass(frozen=True)
class ParamEntry:
    """One trainable parameter of the model, under the name every backend registers it as."""

    node: IRNode
    call: Call
    name: str
    param: Param


@dataclass
class IRGraph:
    """The lowered model: nodes, the output node, the event and its orderings, the distribution."""

    graph: nx.DiGraph
    output: str
    ctx: LowerContext
    distribution: DistributionInfo
    dense_output: bool
    name: str = ""
    event_shape: tuple[int, ...] = ()                    # as the spec writes it
    conditioning: dict[str, Any] = field(default_factory=dict)
    source: SpecSource | None = None
    description: str = ""                               # the spec's, overrides applied

    def node(self, name: str) -> IRNode:
        return self.graph.nodes[name]["node"]

    @cached_property
    def _order(self) -> list[str]:
        return list(nx.topological_sort(self.graph))

    def __iter__(self) -> Iterator[IRNode]:
        for name in self._order:
            yield self.node(name)

    def op_nodes(self) -> list[IRNode]:
        return [n for n in self if n.kind == "op"]

    @property
    def parameters(self) -> int:
        return sum(n.parameters for n in self)

    def parameter_table(self) -> dict[str, ParamEntry]:
        """Every parameter by its canonical name `<node>__<call>__<param>` (backends register
        parameters under `net.<name>`, so checkpoints move between backends)."""
        table: dict[str, ParamEntry] = {}
        for node in self.op_nodes():
            assert node.program is not None
            for call in node.program.calls:
                for pname, param in call.primitive.params().items():
                    key = f"{node.ident}__{call.name}__{pname}"
                    table[key] = ParamEntry(node, call, pname, param)
        return table

    def verify(self) -> None:
        """Structural invariants checked between passes: acyclic, inputs exist, programs bound."""
        assert nx.is_directed_acyclic_graph(self.graph), "the IR has a cycle"
        idents = set()
        for n in self:
            for i in n.all_inputs:
                assert i in self.graph, f"{n.name} reads unknown {i}"
            assert n.ident and n.ident not in idents, f"{n.name}: identifier {n.ident!r} is not unique"
            idents.add(n.ident)
            if n.kind == "op":
                assert n.program is not None and len(n.program.inputs) == len(n.all_inputs), f"{n.name}: program inputs"
        assert self.output in self.graph, "the output node is missing"
