"""Safe YAML parsing that keeps the line and column of every value.

PyYAML is used only to compose a node tree (no Python objects are ever constructed from tags), so
nothing in a spec can execute code. Duplicate keys, unknown tags and alias bombs are reported as
located problems.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from arspec.errors import Location, Problems

Path = tuple[str | int, ...]

_SCALAR_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:timestamp",
}
_MAX_NODES = 200_000
MAX_DEPTH = 64          # nesting deeper than this is no spec (and would exhaust the recursion of later stages)


@dataclass
class SourceMap:
    """Maps a path inside the parsed document to where it was written."""

    file: str
    positions: dict[Path, Location] = field(default_factory=dict)

    def locate(self, path: Path) -> Location:
        """The location of `path`, or of its nearest written ancestor."""
        path = tuple(path)
        while path:
            if path in self.positions:
                return self.positions[path]
            path = path[:-1]
        return self.positions.get((), Location(self.file, 1, 1))


def _loc(file: str, mark: yaml.Mark) -> Location:
    return Location(file, mark.line + 1, mark.column + 1)


_CONSTRUCTOR = yaml.constructor.SafeConstructor()


def _resolve_scalar(node: yaml.ScalarNode) -> Any:
    """A composed scalar as PyYAML's safe loader constructs it (YAML 1.1: `017` is 15, `1:30` is
    90, `0x10` is 16, `.inf`, `yes`/`off`, dates); only plain data, never an object."""
    return _CONSTRUCTOR.yaml_constructors[node.tag](_CONSTRUCTOR, node)


def load_yaml(text: str, filename: str, problems: Problems) -> tuple[Any, SourceMap]:
    """Parse `text` into plain data and a SourceMap; problems are added, never raised."""
    source = SourceMap(filename)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        problems.add(Location(filename, 1, 1), "", f"the spec nests lists or mappings far deeper than the limit of {MAX_DEPTH} levels")
        return None, source
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        loc = _loc(filename, mark) if mark else Location(filename, 1, 1)
        problems.add(loc, "", f"YAML syntax error: {err.problem or err.context}")
        return None, source
    except yaml.YAMLError as err:
        problems.add(Location(filename, 1, 1), "", f"YAML error: {err}")
        return None, source
    if root is None:
        problems.add(Location(filename, 1, 1), "", "the spec is empty")
        return None, source
    count = [0]

    def build(node: yaml.Node, path: Path) -> Any:
        count[0] += 1
        if count[0] > _MAX_NODES:
            raise _TooLarge(node)
        if len(path) > MAX_DEPTH:
            raise _TooDeep(node)
        source.positions.setdefault(path, _loc(filename, node.start_mark))
        if isinstance(node, yaml.ScalarNode):
            if node.tag not in _SCALAR_TAGS:
                problems.add(_loc(filename, node.start_mark), _dotted(path), f"unsupported YAML tag {node.tag!r}")
                return None
            try:
                return _resolve_scalar(node)
            except (ValueError, yaml.YAMLError):
                return node.value
        if isinstance(node, yaml.SequenceNode):
            if node.tag != "tag:yaml.org,2002:seq":
                problems.add(_loc(filename, node.start_mark), _dotted(path), f"unsupported YAML tag {node.tag!r}")
                return None
            return [build(item, path + (i,)) for i, item in enumerate(node.value)]
        if isinstance(node, yaml.MappingNode):
            if node.tag != "tag:yaml.org,2002:map":
                problems.add(_loc(filename, node.start_mark), _dotted(path), f"unsupported YAML tag {node.tag!r}")
                return None
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag not in _SCALAR_TAGS:
                    problems.add(_loc(filename, key_node.start_mark), _dotted(path), "keys must be plain scalars")
                    continue
                key = str(_resolve_scalar(key_node)) if key_node.tag != "tag:yaml.org,2002:str" else key_node.value
                if key == "<<":
                    problems.add(_loc(filename, key_node.start_mark), _dotted(path), "YAML merge keys ('<<') are not supported")
                    continue
                if key in out:
                    first = source.positions.get(path + (key,))
                    where = f" (first at line {first.line})" if first else ""
                    problems.add(_loc(filename, key_node.start_mark), _dotted(path + (key,)), f"duplicate key {key!r}{where}")
                    continue
                source.positions[path + (key,)] = _loc(filename, key_node.start_mark)
                out[key] = build(value_node, path + (key,))
            return out
        problems.add(_loc(filename, node.start_mark), _dotted(path), "unsupported YAML node")
        return None

    try:
        data = build(root, ())
    except _TooLarge as err:
        problems.add(_loc(filename, err.node.start_mark), "", f"the document expands to more than {_MAX_NODES} nodes (alias bomb?)")
        return None, source
    except _TooDeep as err:
        problems.add(_loc(filename, err.node.start_mark), "", f"lists or mappings nested deeper than the limit of {MAX_DEPTH} levels")
        return None, source
    return data, source


class _TooLarge(Exception):
    def __init__(self, node: yaml.Node) -> None:
        self.node = node


class _TooDeep(Exception):
    def __init__(self, node: yaml.Node) -> None:
        self.node = node


def _dotted(path: Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = str(part)
            shown = text if text.isprintable() and text.strip() == text and text else repr(text)   # one line, whatever the key
            out += ("." if out else "") + shown
    return out


dotted = _dotted
