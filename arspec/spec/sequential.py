"""sequential — a chain of ops written inline, e.g. `layers: [relu, {conv1x1: 256}, relu]`.

It is sugar: expansion turns each layer into its own node (`head/0`, `head/1`, ...), so each keeps
its own footprint; a layer is an op name, `{op: channels}` or `{op: {parameters}}`."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from arspec.ops.base import NodeSpec


class SequentialSpec(NodeSpec):
    op: Literal["sequential"]
    layers: list[str | dict[str, Any]] = Field(min_length=1)


def layer_to_node(layer: str | dict[str, Any]) -> dict[str, Any]:
    """One `layers` entry as a node mapping (without inputs)."""
    if isinstance(layer, str):
        return {"op": layer}
    if len(layer) != 1:
        raise ValueError("each layer is an op name, {op: channels} or {op: {parameters}}")
    (op, value), = layer.items()
    if isinstance(value, dict):
        return {"op": op, **value}
    return {"op": op, "channels": value}
