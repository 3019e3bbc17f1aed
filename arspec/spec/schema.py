"""The JSON Schema of the spec format, for editors (yaml-language-server) and tools.

It is generated from the same pydantic models the loader uses. Block bodies are typed like graph
nodes, and every op parameter may also be a `$name` reference (substituted before validation)."""
from __future__ import annotations

import json
from typing import Any

from arspec.spec.nodes import GraphNode, ModelSpec

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
    defs = schema.get("$defs", {})
    for name, defn in defs.items():
        if name.endswith("Spec") and "op" in defn.get("properties", {}) or name == "BlockUse":
            _allow_refs(defn)
    graph = schema["properties"]["graph"]
    node_ref = graph["additionalProperties"]
    if "BlockSpec" in defs:
        defs["BlockSpec"]["properties"]["graph"]["additionalProperties"] = node_ref
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "arspec model spec"
    schema["properties"].setdefault("$schema", {"type": "string"})
    return schema


def schema_json() -> str:
    return json.dumps(spec_schema(), indent=2, sort_keys=True) + "\n"


__all__ = ["spec_schema", "schema_json", "GraphNode"]
