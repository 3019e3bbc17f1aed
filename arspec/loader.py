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
from arspec.ir.lower import lower
from arspec.spec.expand import expand
from arspec.spec.models import ModelSpec
from arspec.spec.nodes import node_adapter
from arspec.spec.overrides import apply_overrides, substitute_params
from arspec.spec.pydantic_errors import report_validation_error
from arspec.spec.yaml_source import load_yaml

MAX_SPEC_BYTES = 5_000_000


def parse_spec(text: str, filename: str = "<string>", overrides: Sequence[str] = ()) -> ModelSpec:
    """Parse, validate, expand and lower a spec; raise SpecError listing every problem."""
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
    raw = copy.deepcopy(data)
    substitute_params(raw, source, problems)
    try:
        spec = ModelSpec.model_validate(raw)
    except ValidationError as err:
        report_validation_error(err, raw, (), source, problems)
        _report_node_errors(raw, source, problems)
        problems.raise_if_any()
        raise
    expansion = expand(spec, raw, source, problems)
    problems.raise_if_any()
    ir = lower(spec, expansion, source, problems)
    problems.raise_if_any()
    assert ir is not None
    ir.source = SpecSource(text, filename, tuple(overrides))
    spec._text = text
    spec._filename = filename
    spec._ir = ir
    spec._overrides = list(overrides)
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
