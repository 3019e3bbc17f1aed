"""Expansion: blocks, repeats, `sequential` and `$param` references become a flat list of typed
nodes whose inputs are resolved to unique names, each remembering where it was written."""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from arspec.errors import Problems
from arspec.ops.base import NodeSpec, RepeatSpec
from arspec.ops.elementwise import MergeSpec
from arspec.ordering import OBSERVED
from arspec.spec.models import BlockUse, ModelSpec
from arspec.spec.nodes import node_adapter
from arspec.spec.pydantic_errors import report_validation_error
from arspec.spec.sequential import SequentialSpec, layer_to_node
from arspec.spec.yaml_source import Path, SourceMap, dotted

MAX_NODES = 100_000
MAX_BLOCK_DEPTH = 8
_REF = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)$")


@dataclass
class ExpandedNode:
    """One op instance of the flattened graph."""

    name: str
    spec: NodeSpec
    inputs: list[str]
    condition: list[str]
    residual: str | None
    path: Path                      # where it was written (for locating problems)
    origin: str                     # how a user refers to it, e.g. "stack[3].filt"


@dataclass
class Expansion:
    nodes: list[ExpandedNode] = field(default_factory=list)
    scope: dict[str, str] = field(default_factory=dict)   # user-visible name -> node name


def substitute(value: Any, params: dict[str, Any], path: Path, source: SourceMap, problems: Problems | None,
               keep: frozenset[str] = frozenset()) -> Any:
    """Replace whole-value `$name` strings by params[name]; report unknown names unless in `keep`."""
    if isinstance(value, dict):
        return {k: substitute(v, params, path + (k,), source, problems, keep) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, params, path + (i,), source, problems, keep) for i, v in enumerate(value)]
    if isinstance(value, str):
        m = _REF.match(value)
        if m:
            name = m.group(1)
            if name in params:
                return copy.deepcopy(params[name])
            if name not in keep and problems is not None:
                problems.add(source.locate(path), _dotted(path), f"unknown parameter ${name}")
    return value


_dotted = dotted


def _repeat_iterations(repeat: RepeatSpec, path: Path, source: SourceMap, problems: Problems) -> list[dict[str, Any]] | None:
    values = repeat.values()
    counts = {k: len(v) for k, v in values.items()}
    lengths = set(counts.values())
    if repeat.times is not None and not values:
        return [{} for _ in range(repeat.times)]
    if len(lengths) > 1:
        problems.add(source.locate(path + ("repeat",)), _dotted(path + ("repeat",)),
                     f"per-iteration values have different lengths: {counts}")
        return None
    n = lengths.pop() if lengths else 1
    if repeat.times is not None and repeat.times != n and any(isinstance((repeat.model_extra or {}).get(k), list) for k in values):
        problems.add(source.locate(path + ("repeat", "times")), _dotted(path + ("repeat", "times")),
                     f"times is {repeat.times} but the value lists have {n} entries")
        return None
    if n > 10_000:
        problems.add(source.locate(path + ("repeat",)), _dotted(path + ("repeat",)), f"{n} iterations is more than the limit of 10,000")
        return None
    return [{k: v[i] for k, v in values.items()} for i in range(n)]


class Expander:
    """Walks the spec's graph and blocks; collects problems instead of raising."""

    def __init__(self, spec: ModelSpec, raw: dict[str, Any], source: SourceMap, problems: Problems) -> None:
        self.spec, self.raw, self.source, self.problems = spec, raw, source, problems
        self.out = Expansion()
        self.global_scope = {"x": "x", **{name: name for name in spec.conditioning}}
        if any(o.type == "agnostic" for o in spec.orderings):
            self.global_scope[OBSERVED] = OBSERVED      # the mask of given elements (order-agnostic models)
        self.produced: set[str] = set()

    def run(self) -> Expansion:
        self.out.scope.update(self.global_scope)
        for reserved in self.global_scope:
            if reserved in self.raw.get("graph", {}):
                self.problems.add(self.source.locate(("graph", reserved)), f"graph.{reserved}",
                                  f"{reserved!r} is reserved (the data, a conditioning input or the observed mask)")
        self._graph(self.raw["graph"], ("graph",), "", self.out.scope, default_input="x", depth=0)
        return self.out

    # -- graphs ---------------------------------------------------------------------------
    def _graph(self, graph: dict[str, Any], path: Path, prefix: str, scope: dict[str, str], default_input: str, depth: int) -> str:
        prev = default_input
        for name, node in graph.items():
            if not isinstance(node, dict):
                self.problems.add(self.source.locate(path + (name,)), _dotted(path + (name,)), "a node must be a mapping")
                continue
            if len(self.out.nodes) > MAX_NODES:
                self.problems.add(self.source.locate(path + (name,)), _dotted(path + (name,)), f"the graph expands to more than {MAX_NODES:,} nodes")
                return prev
            node_path = path + (name,)
            if "block" in node:
                self._block_use(name, node, node_path, prefix, scope, prev, depth)
            elif node.get("op") == "sequential":
                self._sequential(name, node, node_path, prefix, scope, prev)
            else:
                self._op_node(name, node, node_path, prefix, scope, prev)
            prev = scope.get(name, prev)
        return prev

    def _resolve(self, ref: str, scope: dict[str, str], path: Path) -> str | None:
        """A user name in scope, or an expanded node's own name (e.g. 'stack[3]')."""
        if ref in scope:
            return scope[ref]
        if ref in self.produced:
            return ref
        self.problems.add(self.source.locate(path), _dotted(path), f"unknown node {ref!r}")
        return None

    def _validate(self, node: dict[str, Any], path: Path) -> NodeSpec | None:
        try:
            return node_adapter().validate_python(node)
        except ValidationError as err:
            report_validation_error(err, node, path, self.source, self.problems)
            return None

    def _op_node(self, name: str, node: dict[str, Any], path: Path, prefix: str, scope: dict[str, str], prev: str) -> None:
        spec = self._validate(node, path)
        if spec is None:
            return
        iterations = [{}] if spec.repeat is None else _repeat_iterations(spec.repeat, path, self.source, self.problems)
        if iterations is None:
            return
        current = prev
        shared: list[str | None] = []
        for i, values in enumerate(iterations):
            body = {k: v for k, v in node.items() if k != "repeat"}
            body.update(values)
            ispec = self._validate(body, path) if values else spec
            if ispec is None:
                return
            node_name = f"{prefix}{name}" + (f"[{i}]" if len(iterations) > 1 else "")
            found: list[str | None]
            if i == 0 and spec.inputs is None:
                found = [prev]
            elif i == 0:
                found = [self._resolve(r, scope, path + ("inputs",)) for r in spec.inputs or []]
            else:
                found = [current, *shared]        # the first input is threaded, the others read by every iteration
            if i == 0:
                shared = found[1:]
            found_cond = [self._resolve(c, scope, path + ("condition",)) for c in ispec.condition]
            resolved = [r for r in found if r is not None]
            cond = [c for c in found_cond if c is not None]
            if len(resolved) < len(found) or len(cond) < len(found_cond):
                return
            residual = None
            if ispec.residual == "in" and (len(iterations) > 1 or "in" not in scope):
                residual = resolved[0]
            elif ispec.residual is not None:
                residual = self._resolve(ispec.residual, scope, path + ("residual",))
                if residual is None:
                    return
            self.out.nodes.append(ExpandedNode(node_name, ispec, resolved, cond, residual, path, node_name))
            self.produced.add(node_name)
            current = node_name
        scope[name] = current

    def _sequential(self, name: str, node: dict[str, Any], path: Path, prefix: str, scope: dict[str, str], prev: str) -> None:
        spec = self._validate(node, path)
        if not isinstance(spec, SequentialSpec):
            return
        if spec.condition:
            self.problems.add(self.source.locate(path + ("condition",)), _dotted(path + ("condition",)), "condition is not supported on sequential; condition a layer node instead")
            return
        current_inputs = list(spec.inputs) if spec.inputs is not None else None
        current = prev
        for j, layer in enumerate(spec.layers):
            try:
                body = layer_to_node(layer)
            except ValueError as err:
                self.problems.add(self.source.locate(path + ("layers", j)), _dotted(path + ("layers", j)), str(err))
                return
            body["inputs"] = current_inputs if j == 0 and current_inputs is not None else [current if j else prev]
            if j == len(spec.layers) - 1 and spec.residual is not None:
                body["residual"] = spec.residual
            sub = f"{name}/{j}"
            self._op_node(sub, body, path + ("layers", j), prefix, scope, current if j else prev)
            if sub not in scope:
                return
            current = scope[sub]
        scope[name] = current

    def _block_use(self, name: str, node: dict[str, Any], path: Path, prefix: str, scope: dict[str, str], prev: str, depth: int) -> None:
        spec = self._validate(node, path)
        if spec is None or not isinstance(spec, BlockUse):
            return
        if depth >= MAX_BLOCK_DEPTH:
            self.problems.add(self.source.locate(path), _dotted(path), f"blocks nest deeper than {MAX_BLOCK_DEPTH} levels")
            return
        block = self.spec.blocks.get(spec.block)
        if block is None:
            known = ", ".join(sorted(self.spec.blocks)) or "none defined"
            self.problems.add(self.source.locate(path + ("block",)), _dotted(path + ("block",)), f"unknown block {spec.block!r} (known: {known})")
            return
        bpath: Path = ("blocks", spec.block)
        iterations = [{}] if spec.repeat is None else _repeat_iterations(spec.repeat, path, self.source, self.problems)
        if iterations is None:
            return
        given = set(spec.args) | set(iterations[0])
        missing = [p for p in block.params if p not in given]
        unknown = [p for p in given if p not in block.params]
        if missing:
            self.problems.add(self.source.locate(path), _dotted(path), f"block {spec.block!r} needs values for {', '.join(missing)}")
        if unknown:
            self.problems.add(self.source.locate(path), _dotted(path), f"block {spec.block!r} has no parameter {', '.join(unknown)}")
        if missing or unknown:
            return
        in_refs = spec.inputs if spec.inputs is not None else [prev]
        if len(in_refs) != len(block.inputs):
            self.problems.add(self.source.locate(path + ("inputs",)), _dotted(path + ("inputs",)),
                              f"block {spec.block!r} takes {len(block.inputs)} inputs ({', '.join(block.inputs)}), got {len(in_refs)}")
            return
        found = [self._resolve(r, scope, path + ("inputs",)) for r in in_refs]
        current = [c for c in found if c is not None]
        if len(current) < len(found):
            return
        if block.outputs is not None and len(iterations) > 1 and set(block.outputs) != set(block.inputs):
            self.problems.add(self.source.locate(bpath + ("outputs",)), _dotted(bpath + ("outputs",)),
                              f"a repeated block must output its inputs ({', '.join(block.inputs)}) to thread them")
            return
        named: dict[str, list[str]] = {}
        threaded: dict[str, str] = {}
        for i, values in enumerate(iterations):
            params = {**spec.args, **values}
            iprefix = f"{prefix}{name}" + (f"[{i}]" if len(iterations) > 1 else "") + "."
            local = dict(self.global_scope)
            local.update({k: v for k, v in scope.items() if "." not in k or k.startswith(prefix)})
            local.update(dict(zip(block.inputs, current)))
            body = substitute(block.graph, params, bpath + ("graph",), self.source, self.problems)
            last = self._graph(body, bpath + ("graph",), iprefix, local, current[0], depth + 1)
            for node_name, node in body.items():
                if isinstance(node, dict) and isinstance(node.get("output"), str) and node_name in local:
                    named.setdefault(node["output"], []).append(local[node_name])
            if block.outputs is not None:
                threaded = {}
                for key, ref in block.outputs.items():
                    resolved = self._resolve(ref, local, bpath + ("outputs", key))
                    if resolved is None:
                        return
                    threaded[key] = resolved
                if len(iterations) > 1:
                    current = [threaded[k] for k in block.inputs]
            else:
                main = [n for n, v in body.items() if isinstance(v, dict) and "output" not in v]
                threaded = {"out": local.get(main[-1], last) if main else last}
                current = [threaded["out"]]
        if block.outputs is None:
            scope[name] = threaded["out"]
        else:
            for key, value in threaded.items():
                scope[f"{name}.{key}"] = value
            scope[name] = threaded[next(iter(block.outputs))]
        for key, nodes in named.items():
            if len(nodes) == 1:
                scope[f"{name}.{key}"] = nodes[0]
                continue
            total = f"{prefix}{name}.{key}"
            self.out.nodes.append(ExpandedNode(total, MergeSpec.model_validate({"op": "add"}), nodes, [], None, path, f"{name}.{key}"))
            self.produced.add(total)
            scope[f"{name}.{key}"] = total


def expand(spec: ModelSpec, raw: dict[str, Any], source: SourceMap, problems: Problems) -> Expansion:
    """Flatten `spec` (validated) using `raw` (its substituted plain data) for block bodies."""
    return Expander(spec, raw, source, problems).run()
