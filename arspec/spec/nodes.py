"""The typed union of graph nodes: one pydantic model per registered op (plugins included), plus
`sequential` and block uses. Built on first use and rebuilt when the set of ops changes."""
from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Discriminator, Tag, TypeAdapter

from arspec.ops import registry
from arspec.spec.models import BlockUse
from arspec.spec.sequential import SequentialSpec

_cache: dict[str, Any] = {"generation": None}


def _node_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        if "block" in value:
            return "block"
        op = value.get("op")
        return op if isinstance(op, str) else None
    if "block" in type(value).model_fields:
        return "block"
    return getattr(value, "op", None)


def graph_node_type() -> Any:
    """Annotated union of every node model, discriminated by `op` (or `block`)."""
    _refresh()
    return _cache["type"]


def node_adapter() -> TypeAdapter:
    """Validates one graph node (a mapping) into its op's spec model or a BlockUse."""
    _refresh()
    return _cache["adapter"]


def _refresh() -> None:
    generation = registry.generation()
    if _cache["generation"] == generation:
        return
    specs: dict[str, type] = {name: op.Spec for name, op in registry.ops().items()}
    specs["sequential"] = SequentialSpec
    members = [Annotated[spec, Tag(name)] for name, spec in sorted(specs.items())] + [Annotated[BlockUse, Tag("block")]]
    node_type: Any = Annotated[Union[tuple(members)], Discriminator(_node_kind)]  # noqa: UP007  (a union built at run time)
    _cache.update(generation=generation, type=node_type, adapter=TypeAdapter(node_type))
