"""Overrides (`--set key.path=value`, parsed as YAML, safely) and top-level `$params`, applied to the
parsed document before validation; every value keeps a location for error messages."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from arspec.errors import Location, Problems
from arspec.spec.expand import substitute
from arspec.spec.yaml_source import Path, SourceMap, load_yaml


def shown_override(item: str, limit: int = 80) -> str:
    """An override as messages show it: on one line, cut to `limit` characters."""
    text = item if item.isprintable() else repr(item)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _parse_key(key: str) -> Path:
    return tuple(int(p) if p.isdigit() else p for p in key.split("."))


def apply_overrides(data: dict[str, Any], overrides: Sequence[str], source: SourceMap, problems: Problems) -> None:
    """Apply `key.path=value` overrides in place; values are parsed as YAML (safely)."""
    for item in overrides:
        where = Location(f"--set {shown_override(item)}", 1, 1)
        if "=" not in item:
            problems.add(where, "", "an override must look like key.path=value")
            continue
        key, text = item.split("=", 1)
        path = _parse_key(key.strip())
        if not key.strip() or any(p == "" for p in path):
            problems.add(where, key, "empty key in override")
            continue
        value_problems = Problems()
        value, value_source = load_yaml(text if text.strip() else "null", f"--set {shown_override(item)}", value_problems)
        for p in value_problems.items:
            problems.add(where, key, p.message)
        if value_problems:
            continue
        node: Any = data
        ok = True
        for part in path[:-1]:
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
        node[last] = value  # type: ignore[index]
        for known in list(source.positions):
            if known[:len(path)] == path:
                del source.positions[known]
        source.positions[path] = where
        for sub, _ in value_source.positions.items():
            source.positions[path + sub] = where


def substitute_params(data: dict[str, Any], source: SourceMap, problems: Problems) -> None:
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
