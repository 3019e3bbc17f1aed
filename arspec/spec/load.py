"""The loader: text -> YAML with positions -> overrides -> $params -> pydantic -> expansion -> IR.

Every stage collects problems; a SpecError with all of them is raised once at the end."""
from __future__ import annotations

import copy
from pathlib import Path as FsPath
from typing import Any, Sequence

from pydantic import ValidationError

from arspec.errors import Location, Problem, Problems, SpecError
from arspec.ir.lower import lower
from arspec.spec.expand import expand, substitute
from arspec.spec.nodes import ModelSpec
from arspec.spec.pydantic_errors import report_validation_error
from arspec.spec.yaml_source import Path, SourceMap, load_yaml

MAX_SPEC_BYTES = 5_000_000


def _parse_key(key: str) -> Path:
    return tuple(int(p) if p.isdigit() else p for p in key.split("."))


def apply_overrides(data: dict[str, Any], overrides: Sequence[str], source: SourceMap, problems: Problems) -> None:
    """Apply `key.path=value` overrides in place; values are parsed as YAML (safely)."""
    for n, item in enumerate(overrides, start=1):
        where = Location(f"--set {item}", 1, 1)
        if "=" not in item:
            problems.add(where, "", "an override must look like key.path=value")
            continue
        key, text = item.split("=", 1)
        path = _parse_key(key.strip())
        if not key.strip() or any(p == "" for p in path):
            problems.add(where, key, "empty key in override")
            continue
        value_problems = Problems()
        value, value_source = load_yaml(text if text.strip() else "null", f"--set {item}", value_problems)
        for p in value_problems.items:
            problems.add(where, key, p.message)
        if value_problems:
            continue
        node: Any = data
        ok = True
        for i, part in enumerate(path[:-1]):
            if isinstance(node, dict):
                node = node.setdefault(part, {}) if isinstance(part, str) else node.get(part)
            elif isinstance(node, list) and isinstance(part, int) and part < len(node):
                node = node[part]
            else:
                ok = False
                break
            if not isinstance(node, (dict, list)):
                ok = False
                break
        last = path[-1]
        if not ok or not isinstance(node, (dict, list)) or (isinstance(node, list) and (not isinstance(last, int) or last >= len(node))):
            problems.add(where, key, f"cannot set {key!r}: its parent is not a mapping or list in this spec")
            continue
        node[last] = value
        for p in list(source.positions):
            if p[:len(path)] == path:
                del source.positions[p]
        source.positions[path] = where
        for sub, _ in value_source.positions.items():
            source.positions[path + sub] = where


def _substitute_params(data: dict[str, Any], source: SourceMap, problems: Problems) -> None:
    """Top-level `params` are substituted everywhere in graph and blocks (block params win)."""
    params = data.get("params") or {}
    if not isinstance(params, dict):
        return
    if "graph" in data:
        data["graph"] = substitute(data["graph"], params, ("graph",), source, problems)
    if isinstance(data.get("blocks"), dict):
        for name, block in data["blocks"].items():
            if isinstance(block, dict) and isinstance(block.get("graph"), dict):
                own = set(block.get("params") or [])
                shadowed = {k: v for k, v in params.items() if k not in own}
                block["graph"] = substitute(block["graph"], shadowed, ("blocks", name, "graph"), source, None)
    if isinstance(data.get("output"), str):
        data["output"] = substitute(data["output"], params, ("output",), source, problems)


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
    _substitute_params(raw, source, problems)
    try:
        spec = ModelSpec.model_validate(raw)
    except ValidationError as err:
        report_validation_error(err, raw, (), source, problems)
        problems.raise_if_any()
        raise
    expansion = expand(spec, raw, source, problems)
    problems.raise_if_any()
    ir = lower(spec, expansion, source, problems)
    problems.raise_if_any()
    spec._text = text
    spec._filename = filename
    spec._source = source
    spec._ir = ir
    spec._overrides = list(overrides)
    return spec


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
