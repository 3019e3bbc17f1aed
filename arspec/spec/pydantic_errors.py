"""Turn pydantic's validation errors into located, human problems."""
from __future__ import annotations

import difflib
from typing import Any

from pydantic import ValidationError

from arspec.errors import Problems
from arspec.identifiers import PATTERN_WORDS
from arspec.spec.yaml_source import Path, SourceMap, dotted

KEY = "[key]"     # pydantic's last location part for an invalid mapping key


def _data_path(loc: tuple[Any, ...], data: Any) -> Path:
    """Map a pydantic error location onto the data: keep real keys and indices, drop the union
    tags pydantic inserts (a part that is not a key of the mapping and is not the last part)."""
    path: list[Any] = []
    node = data
    if loc and loc[-1] == KEY:          # an invalid key: the path is the key's own
        loc = loc[:-1]
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, dict):
            if part in node:
                path.append(part)
                node = node[part]
            elif last:
                path.append(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            path.append(part)
            node = node[part]
        elif isinstance(node, (dict, list)) and last:
            path.append(part)
        else:
            break   # past the data: the rest are union branch names (int, list[int], ...)
    return tuple(path)


def describe(err: Any) -> str:
    """One pydantic error in the user's words (what was expected, what was given)."""
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    shown = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    if kind == "missing":
        return f"missing required key {str(err['loc'][-1])!r}"
    if kind == "extra_forbidden":
        return f"unknown key {str(err['loc'][-1])!r}"
    if kind == "literal_error":
        return f"expected {ctx.get('expected')}, got {shown}"
    if kind == "union_tag_invalid":
        tags = [t.strip().strip("'") for t in str(ctx.get("expected_tags", "")).split(",")]
        close = difflib.get_close_matches(str(ctx.get("tag")), tags, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        what = _discriminator(ctx)
        shown_tags = ", ".join(t for t in tags if t != "block")
        return f"unknown {what} {ctx.get('tag')!r}{hint}; expected one of: {shown_tags}"
    if kind == "union_tag_not_found":
        what = _discriminator(ctx)
        return "a graph node needs an 'op' (or a 'block')" if what == "op" else f"missing required key {what!r}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"expected an integer, got {shown}"
    if kind in ("float_parsing", "float_type"):
        return f"expected a number, got {shown}"
    if kind in ("string_type",):
        return f"expected a string, got {shown}"
    if kind in ("bool_parsing", "bool_type"):
        return f"expected true or false, got {shown}"
    if kind in ("list_type",):
        return f"expected a list, got {shown}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected a mapping, got {shown}"
    if kind == "greater_than_equal":
        return f"must be >= {ctx.get('ge')}, got {shown}"
    if kind == "greater_than":
        return f"must be > {ctx.get('gt')}, got {shown}"
    if kind == "less_than_equal":
        return f"must be <= {ctx.get('le')}, got {shown}"
    if kind == "less_than":
        return f"must be < {ctx.get('lt')}, got {shown}"
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length')} entries"
    if kind == "too_long":
        return f"has more than {ctx.get('max_length')} entries"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    if kind == "string_pattern_mismatch" and ctx.get("pattern") in PATTERN_WORDS:
        what = "the name" if err["loc"] and err["loc"][-1] == KEY else "the value"
        return f"{what} {shown} is not {PATTERN_WORDS[ctx['pattern']]}"
    if kind == "string_too_long":
        return f"longer than {ctx.get('max_length')} characters"
    if kind == "string_too_short":
        return "is empty" if ctx.get("min_length") == 1 else f"shorter than {ctx.get('min_length')} characters"
    msg = err["msg"]
    return msg[0].lower() + msg[1:] + (f", got {shown}" if value is not None and kind != "value_error" else "")


def _discriminator(ctx: dict[str, Any]) -> str:
    """The key that selects a union branch: 'op' for graph nodes, else pydantic's field name."""
    name = str(ctx.get("discriminator", "type")).strip("'")
    return "op" if "_node_kind" in name else name


def report_validation_error(err: ValidationError, data: Any, base: Path, source: SourceMap, problems: Problems) -> None:
    """Add one located problem per pydantic error (union branches that merely mismatched are skipped)."""
    errors = err.errors(include_url=False)
    reported: set[tuple] = set()
    for e in errors:
        path = base + _data_path(tuple(e["loc"]), data)
        if e["type"] in ("union_tag_invalid", "union_tag_not_found"):
            key = _discriminator(e.get("ctx") or {})
            if e["type"] == "union_tag_invalid":
                path = path + (key,)
        if path in reported:
            continue   # one problem per field (unions of scalar types report each branch)
        reported.add(path)
        if e["type"] == "missing":
            location = source.locate(path[:-1])
        else:
            location = source.locate(path)
        problems.add(location, dotted(path), describe(e))
