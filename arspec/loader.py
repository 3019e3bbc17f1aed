"""The loader: text -> YAML with positions -> overrides -> $params -> pydantic -> expansion -> IR.

Every stage collects problems; a SpecError with all of them is raised once at the end."""
from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path as FsPath
from typing import Any

from pydantic import ValidationError

from arspec.errors import Location, Problem, Problems, SpecError
from arspec.ir.graph import SpecSource
from arspec.ir.lower import NetworkOutput, lower
from arspec.spec.expand import expand
from arspec.spec.models import ModelSpec
from arspec.spec.nodes import node_adapter
from arspec.spec.overrides import apply_overrides, substitute_params
from arspec.spec.pydantic_errors import report_validation_error
from arspec.spec.yaml_source import load_yaml

MAX_SPEC_BYTES = 5_000_000


def parse_spec(text: str, filename: str = "<string>", overrides: Sequence[str] = ()) -> Any:
    """Parse, validate, expand and lower a spec; raise SpecError listing every problem. A spec with
    `parts:` is a model of several parts (an `arspec.composite.CompositeSpec`), any other a ModelSpec."""
    problems = Problems()
    if len(text.encode("utf-8", "replace")) > MAX_SPEC_BYTES:
        raise SpecError([Problem(Location(filename, 1, 1), "", f"the spec is larger than {MAX_SPEC_BYTES:,} bytes")])
    data, source = load_yaml(text, filename, problems)
    problems.raise_if_any()
    if not isinstance(data, dict):
        problems.add(source.locate(()), "", "a spec must be a mapping of top-level keys")
        problems.raise_if_any()
    apply_overrides(data, overrides, source, problems)
    problems.raise_if_any()
    if "parts" in data:
        from arspec.composite.loader import parse_composite
        spec: Any = parse_composite(data, source, problems, filename)
    else:
        spec = parse_model(data, source, problems)
    problems.raise_if_any()
    assert spec is not None
    spec.ir.source = SpecSource(text, filename, tuple(overrides))
    spec._text = text
    spec._filename = filename
    spec._overrides = list(overrides)
    return spec


def parse_model(data: dict[str, Any], source: Any, problems: Problems, part: bool = False,
                network_output: NetworkOutput | None = None) -> ModelSpec | None:
    """One autoregressive model from parsed YAML (a whole spec, or a part of one: `source` then
    locates paths inside the part; `network_output` for a part that is a plain network, whose
    output must have that shape). Problems are added; None when the model cannot be built."""
    raw = copy.deepcopy(data)
    substitute_params(raw, source, problems)
    try:
        spec = ModelSpec.model_validate(raw)
    except ValidationError as err:
        report_validation_error(err, raw, (), source, problems)
        _report_node_errors(raw, source, problems)
        return None
    if not part:
        for name, cond in spec.conditioning.items():
            if getattr(cond, "source", None) is not None:
                problems.add(source.locate(("conditioning", name, "from")), f"conditioning.{name}.from",
                             "`from:` feeds an input from another part; only a part of a spec with `parts:` has other parts")
    expansion = expand(spec, raw, source, problems)
    if problems:
        return None
    ir = lower(spec, expansion, source, problems, network_output)
    if problems or ir is None:
        return None
    spec._ir = ir
    spec._filename = source.file
    return spec


def _report_node_errors(raw: dict[str, Any], source, problems: Problems) -> None:
    """When the top level is invalid the graph is not expanded; still report every node's own errors."""
    graph = raw.get("graph")
    if not isinstance(graph, dict):
        return
    for name, node in graph.items():
        if isinstance(node, dict):
            try:
                node_adapter().validate_python(node)
            except ValidationError as err:
                report_validation_error(err, node, ("graph", name), source, problems)


def load_spec(path: str | FsPath, overrides: Sequence[str] = ()) -> ModelSpec:
    """Read and parse a spec file (see parse_spec)."""
    path = FsPath(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise SpecError([Problem(Location(str(path), 1, 1), "", f"cannot read the spec: {err.strerror}")]) from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError([Problem(Location(str(path), 1, 1), "", f"the spec is larger than {MAX_SPEC_BYTES:,} bytes")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError([Problem(Location(str(path), 1, 1), "", "the spec is not valid UTF-8 text")]) from None
    return parse_spec(text, str(path), overrides)
