"""Where `arspec graph` draws the op graph: repeated blocks (`stack[0..29]`) folded into one box
beyond the first and last, then a layered (Sugiyama) layout from `grandalf`, whose long edges are
routed through their own slots in the layers in between, so an edge never crosses a label."""
from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

FONT_POINTS = 7.0
CHAR_INCHES = 0.602 * FONT_POINTS / 72          # advance of one DejaVu Sans Mono character
BOX_PAD_INCHES = 0.3 * FONT_POINTS / 72 * 2     # the text box's padding on both sides
BOX_HEIGHT_INCHES = 0.34                         # two lines of text and the padding
NODE_GAP_INCHES = 0.18
LAYER_GAP_INCHES = 0.26
COMPONENT_GAP_INCHES = 0.5
FOLD_AT = 4                                      # repeats of a block from which the middle ones are folded
SWEEPS = 4                                       # crossing-reduction rounds

REPEATED = re.compile(r"^(?P<block>[A-Za-z_]\w*)\[(?P<index>\d+)\](?P<rest>[./].+)?$")
FOLDED = re.compile(r"\[(?P<first>\d+)(?:\.\.(?P<last>\d+))?\]$")


@dataclass(frozen=True)
class NodeBox:
    """Where a node of the drawn graph sits (centre, inches; y grows upwards) and what it says."""

    x: float
    y: float
    width: float
    label: str
    kind: str                                   # "data", "context", "op" or "folded"
    members: tuple[str, ...]                    # the IR nodes it stands for


@dataclass
class GraphLayout:
    """The drawn graph: boxes by name, and each edge's route from source to target centre."""

    boxes: dict[str, NodeBox]
    routes: dict[tuple[str, str], list[tuple[float, float]]]
    residual: set[tuple[str, str]] = field(default_factory=set)
    shown: dict[str, str] = field(default_factory=dict)      # IR node -> the box drawing it

    def __contains__(self, name: object) -> bool:
        return name in self.boxes

    def __iter__(self):
        return iter(self.boxes)

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, name: str) -> NodeBox:
        return self.boxes[name]


def node_label(node: Any) -> str:
    """A node's two lines: its name and its op (or kind)."""
    kind = node.op.name if node.op is not None else node.kind
    return f"{node.name}\n{kind}"


def label_width(label: str) -> float:
    return max(len(line) for line in label.split("\n")) * CHAR_INCHES + BOX_PAD_INCHES


def folded_names(ir: Any, keep: Collection[str] = (), fold_at: int = FOLD_AT) -> dict[str, str]:
    """Each IR node's box: itself, or `block[a..b]` when it belongs to a run of repeats a..b of a
    block repeated at least `fold_at` times. The first and last repeats stay, and so does every
    repeat holding a node of `keep` (a leak's route)."""
    indices: dict[str, set[int]] = {}
    for node in ir:
        match = REPEATED.match(node.name)
        if match:
            indices.setdefault(match["block"], set()).add(int(match["index"]))
    shown = {node.name: node.name for node in ir}
    for block, present in indices.items():
        if len(present) < fold_at:
            continue
        kept = {min(present), max(present)}
        for name in keep:
            match = REPEATED.match(name)
            if match and match["block"] == block:
                kept.add(int(match["index"]))
        runs: dict[int, tuple[int, int]] = {}
        for index in sorted(present - kept):
            start = index if index - 1 not in runs else runs[index - 1][0]
            runs[index] = (start, index)
            for i in range(start, index):
                runs[i] = (start, index)
        for node in ir:
            match = REPEATED.match(node.name)
            if match and match["block"] == block and int(match["index"]) in runs:
                a, b = runs[int(match["index"])]
                shown[node.name] = f"{block}[{a}]" if a == b else f"{block}[{a}..{b}]"
    return shown


def graph_layout(ir: Any, keep: Collection[str] = (), fold: bool = True) -> GraphLayout:
    """Fold repeated blocks (unless `fold` is false), then lay the graph out in layers top to
    bottom. Falls back to the unfolded graph if folding would join nodes into a cycle."""
    shown = folded_names(ir, keep) if fold else {node.name: node.name for node in ir}
    graph = _drawn_graph(ir, shown)
    if not nx.is_directed_acyclic_graph(graph):
        shown = {node.name: node.name for node in ir}
        graph = _drawn_graph(ir, shown)
    boxes, routes = _sugiyama(graph)
    residual = {(shown[node.residual], shown[node.name]) for node in ir
                if node.residual and shown[node.residual] != shown[node.name]}
    return GraphLayout(boxes, routes, residual, shown)


def _drawn_graph(ir: Any, shown: dict[str, str]) -> nx.DiGraph:
    graph = nx.DiGraph()
    members: dict[str, list[Any]] = {}
    for node in ir:
        members.setdefault(shown[node.name], []).append(node)
    for name, nodes in members.items():
        if len(nodes) == 1 and nodes[0].name == name:
            graph.add_node(name, label=node_label(nodes[0]), kind=nodes[0].kind, members=(name,))
        else:
            count = _repeats(name)
            graph.add_node(name, label=f"{name}\n{count} x {len(nodes) // count} ops (folded)", kind="folded",
                           members=tuple(n.name for n in nodes))
    for node in ir:
        for source in node.all_inputs:
            a, b = shown[source], shown[node.name]
            if a != b:
                graph.add_edge(a, b)
    return graph


def _repeats(name: str) -> int:
    """How many repeats a folded box `block[a..b]` (or `block[a]`) stands for."""
    match = FOLDED.search(name)
    assert match is not None, name
    return int(match["last"] or match["first"]) - int(match["first"]) + 1


class _Box:
    """grandalf's view of a vertex: its size, and where the layout puts it."""

    def __init__(self, w: float, h: float) -> None:
        self.w, self.h = w, h
        self.xy = (0.0, 0.0)


class _Route:
    """grandalf's view of an edge: the points it is routed through."""

    def __init__(self) -> None:
        self.points: list[tuple[float, float]] = []

    def setpath(self, points: list[tuple[float, float]]) -> None:
        self.points = [(float(x), float(y)) for x, y in points]


def _sugiyama(graph: nx.DiGraph) -> tuple[dict[str, NodeBox], dict[tuple[str, str], list[tuple[float, float]]]]:
    """grandalf's layered layout, each weakly connected part beside the last; y grows upwards."""
    from grandalf.graphs import Edge, Vertex, graph_core
    from grandalf.layouts import SugiyamaLayout

    vertices: dict[str, Any] = {}
    for name, data in graph.nodes(data=True):
        vertex = Vertex(name)
        vertex.view = _Box(label_width(data["label"]), BOX_HEIGHT_INCHES)
        vertices[name] = vertex
    edges: dict[tuple[str, str], Any] = {}
    for a, b in graph.edges:
        edge = Edge(vertices[a], vertices[b])
        edge.view = _Route()
        edges[(a, b)] = edge
    boxes: dict[str, NodeBox] = {}
    left = 0.0
    order = {name: i for i, name in enumerate(graph.nodes)}
    for nodes in sorted(nx.weakly_connected_components(graph), key=lambda c: min(order[n] for n in c)):
        # each part built with its edges in the graph's order: grandalf's own split (Graph.C)
        # collects them in a set of objects hashed by address, so the layout changed between runs
        part = graph_core([vertices[n] for n in graph.nodes if n in nodes],
                          [edges[(a, b)] for a, b in graph.edges if a in nodes])
        layout = SugiyamaLayout(part)
        layout.xspace, layout.yspace = NODE_GAP_INCHES, LAYER_GAP_INCHES
        layout.init_all(roots=[v for v in part.sV if not v.e_in()], optimize=True)
        layout.draw(SWEEPS)
        placed = list(part.sV)
        lo = min(v.view.xy[0] - v.view.w / 2 for v in placed)
        hi = max(v.view.xy[0] + v.view.w / 2 for v in placed)
        shift = left - lo
        for vertex in placed:
            x, y = vertex.view.xy
            data = graph.nodes[vertex.data]
            boxes[vertex.data] = NodeBox(x + shift, -y, vertex.view.w, data["label"], data["kind"], data["members"])
        for edge in part.sE:
            edge.view.points = [(x + shift, -y) for x, y in edge.view.points]
        left += hi - lo + COMPONENT_GAP_INCHES
    routes = {key: edge.view.points or [(boxes[key[0]].x, boxes[key[0]].y), (boxes[key[1]].x, boxes[key[1]].y)]
              for key, edge in edges.items()}
    return boxes, routes
