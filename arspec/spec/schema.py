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
    _names_as_property_names(schema)
    defs = schema.setdefault("$defs", {})
    nodes = TypeAdapter(graph_node_type()).json_schema(ref_template="#/$defs/{model}")
    _names_as_property_names(nodes)
    defs.update(nodes.pop("$defs", {}))
    defs["GraphNode"] = nodes
    for name, defn in defs.items():
        if name.endswith("Spec") and "op" in defn.get("properties", {}) or name == "BlockUse":
            _allow_refs(defn)
    node_ref = {"$ref": "#/$defs/GraphNode"}
    graph = schema["properties"]["graph"]
    graph["additionalProperties"] = node_ref
    defs["BlockSpec"]["properties"]["graph"]["additionalProperties"] = node_ref
    schema["properties"].setdefault("$schema", {"type": "string"})
    return _with_parts(schema, defs)


def _with_parts(model: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """The root: a spec is one model, or a model of several parts (`parts:`): an encoder (a graph),
    a prior (a standard normal or a model) and a decoder (a model), or flows (models)."""
    import copy

    from arspec.composite.models import CompositeSpec, EncoderPart, StandardNormalPrior
    model = {k: v for k, v in model.items() if k != "$defs"}
    defs["ModelSpec"] = model
    part = copy.deepcopy(model)
    part["properties"]["role"] = {"enum": ["prior", "decoder", "flow"], "type": "string"}
    part["required"] = ["role", "graph"]          # a flow's distribution defaults to its shift and scale
    part["title"] = "ModelPart"
    defs["ModelPart"] = part
    for cls in (EncoderPart, StandardNormalPrior, CompositeSpec):
        sub = cls.model_json_schema(ref_template="#/$defs/{model}")
        _names_as_property_names(sub)
        defs.update(sub.pop("$defs", {}))
        defs[cls.__name__] = sub
    defs["EncoderPart"]["properties"]["graph"]["additionalProperties"] = {"$ref": "#/$defs/GraphNode"}
    defs["CompositeSpec"]["properties"]["parts"]["additionalProperties"] = {
        "anyOf": [{"$ref": "#/$defs/EncoderPart"}, {"$ref": "#/$defs/StandardNormalPrior"}, {"$ref": "#/$defs/ModelPart"}]}
    defs["CompositeSpec"]["properties"].setdefault("$schema", {"type": "string"})
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "arspec model spec",
        "description": "One autoregressive model, or a model of several parts (parts:, e.g. PixelVAE).",
        "anyOf": [{"$ref": "#/$defs/ModelSpec"}, {"$ref": "#/$defs/CompositeSpec"}],
        "$defs": defs,
    }


def _names_as_property_names(node: Any) -> None:
    """Mappings keyed by names (`dict[Identifier, X]`): pydantic writes `patternProperties`; here
    the name rule becomes `propertyNames` and X the `additionalProperties`, which the graph's node
    schema can then replace."""
    if isinstance(node, dict):
        patterns = node.get("patternProperties")
        if isinstance(patterns, dict) and len(patterns) == 1:
            (pattern, value), = patterns.items()
            del node["patternProperties"]
            node["propertyNames"] = {"pattern": pattern}
            node["additionalProperties"] = value
        for value in node.values():
            _names_as_property_names(value)
    elif isinstance(node, list):
        for value in node:
            _names_as_property_names(value)


def schema_json() -> str:
    return json.dumps(spec_schema(), indent=2, sort_keys=True) + "\n"


__all__ = ["schema_json", "spec_schema"]
