"""IR nodes and the graph that holds them (networkx DiGraph, edges from input to consumer)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import networkx as nx

from arspec.errors import Location
from arspec.ops.base import LowerContext, Op, TensorType


@dataclass
class IRNode:
    """One tensor-producing node. `kind` is 'data' (x), 'context' (a conditioning input) or 'op'."""

    name: str
    kind: str
    type: TensorType
    op: Op | None = None
    spec: Any = None
    attrs: dict[str, Any] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)       # main inputs then op extras
    conditions: list[str] = field(default_factory=list)
    residual: str | None = None
    location: Location | None = None
    spec_path: str = ""
    parameters: int = 0

    @property
    def all_inputs(self) -> list[str]:
        return self.inputs + self.conditions + ([self.residual] if self.residual else [])

    @property
    def core_type(self) -> TensorType:
        """The op's own output type, before a gated activation halves the channels."""
        return self.attrs.get("core_type", self.type)


@dataclass
class IRGraph:
    """The lowered model: nodes in topological (spec) order, the output node and the context."""

    graph: nx.DiGraph
    output: str
    ctx: LowerContext
    distribution: Any
    dense_output: bool

    def node(self, name: str) -> IRNode:
        return self.graph.nodes[name]["node"]

    def __iter__(self) -> Iterator[IRNode]:
        for name in nx.topological_sort(self.graph):
            yield self.node(name)

    def op_nodes(self) -> list[IRNode]:
        return [n for n in self if n.kind == "op"]

    @property
    def parameters(self) -> int:
        return sum(n.parameters for n in self)

    def verify(self) -> None:
        """Structural invariants checked between passes: acyclic, inputs exist, one data source."""
        assert nx.is_directed_acyclic_graph(self.graph), "the IR has a cycle"
        for n in self:
            for i in n.all_inputs:
                assert i in self.graph, f"{n.name} reads unknown {i}"
        assert self.output in self.graph, "the output node is missing"
