"""The typed union of graph nodes: one pydantic model per op (from the op registry) or a block use."""
from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Discriminator, Field, PrivateAttr, Tag, TypeAdapter

import arspec.ops  # noqa: F401  (registers ops)
from arspec.ops.base import OPS
from arspec.ops.sequential import SequentialSpec
from arspec.spec.models import BlockSpec, BlockUse, ModelSpecBase


def _node_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        if "block" in value:
            return "block"
        op = value.get("op")
        return op if isinstance(op, str) else None
    if "block" in type(value).model_fields:
        return "block"
    return getattr(value, "op", None)


def _op_specs() -> list[type]:
    seen: dict[str, type] = {}
    for name, op in OPS.items():
        seen[name] = op.Spec
    seen["sequential"] = SequentialSpec
    return [Annotated[spec, Tag(name)] for name, spec in sorted(seen.items())]


GraphNode = Annotated[Union[tuple(_op_specs() + [Annotated[BlockUse, Tag("block")]])], Discriminator(_node_kind)]
node_adapter: TypeAdapter = TypeAdapter(GraphNode)


class ModelSpec(ModelSpecBase):
    """A validated spec. `graph` holds typed nodes; block bodies are validated when expanded."""

    graph: dict[str, GraphNode] = Field(min_length=1)
    _text: str = PrivateAttr("")
    _filename: str = PrivateAttr("<string>")
    _source: Any = PrivateAttr(None)
    _ir: Any = PrivateAttr(None)
    _overrides: list = PrivateAttr(default_factory=list)

    @property
    def ir(self):
        """The lowered IR (built by the loader, so an invalid spec never gets this far)."""
        return self._ir

    @property
    def source_text(self) -> str:
        return self._text

    @property
    def filename(self) -> str:
        return self._filename

    def to_yaml_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True, exclude_defaults=True)


__all__ = ["GraphNode", "ModelSpec", "node_adapter", "BlockSpec"]
