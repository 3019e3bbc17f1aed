"""The lowered form of a spec of several parts: one IR per part, and the links between them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from arspec.errors import Location
from arspec.ir.graph import IRGraph, SpecSource


@dataclass(frozen=True)
class Link:
    """A decoder input fed by another part: `source` is "latent" or "<part>.<node>"."""

    input: str                    # the decoder's conditioning name
    source: str
    part: str | None              # the part that computes it (None: the latent)
    node: str | None
    location: Location

    @property
    def is_latent(self) -> bool:
        return self.part is None


@dataclass
class CompositeIR:
    """A model of several parts, each lowered like a spec: a latent-variable model (`kind` "vae":
    encoder q(z | x), prior p(z), autoregressive decoder p(x | z)) or a distilled student (`kind`
    "flows": inverse autoregressive flows applied in order)."""

    name: str
    event_shape: tuple[int, ...]
    objective: Any
    roles: dict[str, str]                         # role -> part name (flows: "flow" -> the first)
    latent_shape: tuple[int, ...] = ()
    min_scale: float = 1e-4
    encoder: IRGraph | None = None
    decoder: IRGraph | None = None
    prior: IRGraph | None = None                  # None: a standard normal
    decoder_spec: Any = None
    prior_spec: Any = None
    flows: list[IRGraph] = field(default_factory=list)
    flow_specs: list[Any] = field(default_factory=list)
    flow_names: list[str] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    source: SpecSource | None = None

    @property
    def kind(self) -> str:
        return "flows" if self.flows else "vae"

    @property
    def parts(self) -> list[IRGraph]:
        return [p for p in (self.encoder, self.decoder, self.prior, *self.flows) if p is not None]

    @property
    def parameters(self) -> int:
        return sum(p.parameters for p in self.parts)

    def reads_data(self, part: str, node: str) -> bool:
        """Whether node `node` of part `part` (the encoder) is computed from the data x."""
        assert self.encoder is not None
        graph = self.encoder.graph
        return node in graph and "x" in nx.ancestors(graph, node) | {node}
