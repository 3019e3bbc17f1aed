"""The JSON Schema of the spec format, for editors (yaml-language-server) and tools.

It is generated from the same pydantic models the loader uses, including the ops of installed
plugins. Block bodies are typed like graph nodes, and every op parameter may also be a `$name`
reference (substituted before validation)."""
from __future__ import annotations

import json
from typing import Any

from pydantic import TypeAdapter

from arspec.spec.models import ModelSpec
from arspec.spec.nodes import graph_node_type

REF_PATTERN = r"^\$[A-Za-z_][A-Za-z0-9_]*$"
_REF = {"type": "string", "pattern": REF_PATTERN}
_COMMON = {"op", "inputs", "output", "description"}


def _allow_refs(defn: dict[str, Any]) -> None:
    for name, prop in defn.get("properties", {}).items():
        if name in _COMMON:
            continue
        defn["properties"][name] = {"anyOf": [prop, _REF], **({"description": prop["description"]} if "description" in prop else {})}


def spec_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) every valid spec file satisfies."""
    schema = ModelSpec.model_json_schema()
    defs = schema.setdefault("$defs", {})
    nodes = TypeAdapter(graph_node_type()).json_schema(ref_template="#/$defs/{model}")
    defs.update(nodes.pop("$defs", {}))
    defs["GraphNode"] = nodes
    for name, defn in defs.items():
        if name.endswith("Spec") and "op" in defn.get("properties", {}) or name == "BlockUse":
            _allow_refs(defn)
    node_ref = {"$ref": "#/$defs/GraphNode"}
    graph = schema["properties"]["graph"]
    graph["additionalProperties"] = node_ref
    defs["BlockSpec"]["properties"]["graph"]["additionalProperties"] = node_ref
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "arspec model spec"
    schema["properties"].setdefault("$schema", {"type": "string"})
    return schema


def schema_json() -> str:
    return json.dumps(spec_schema(), indent=2, sort_keys=True) + "\n"


__all__ = ["schema_json", "spec_schema"]
