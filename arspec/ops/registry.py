"""The op registry. In-tree ops are found by importing every module of `arspec.ops` (each
registers its ops with `@register_op`), so adding an op touches only its own file. Ops of other
packages come through the `arspec.ops` entry-point group, loaded on first use:

    [project.entry-points."arspec.ops"]
    masked_conv3d = "my_package.conv3d:MaskedConv3d"     # an Op subclass

A plugin that fails to load, or that reuses a taken name, is reported by name and skipped."""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from arspec.ops.base import Op

GROUP = "arspec.ops"
_IN_TREE: dict[str, Op] = {}


def register_op(cls: type[Op]) -> type[Op]:
    """Class decorator for in-tree ops: make the op available under `cls.name`."""
    _IN_TREE[cls.name] = cls()
    return cls


@dataclass
class _Registry:
    ops: dict[str, Op] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)     # op name -> the package that provides it
    broken: dict[str, str] = field(default_factory=dict)
    generation: int = 0
    loaded: bool = False


_registry = _Registry()


def _load_in_tree() -> None:
    import arspec.ops as package
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"arspec.ops.{module.name}")


def _load_plugins() -> None:
    from arspec.ops.base import Op
    for ep in entry_points(group=GROUP):
        try:
            cls = ep.load()
            if not (isinstance(cls, type) and issubclass(cls, Op)):
                raise TypeError(f"entry point gave {cls!r}, not an arspec.ops.base.Op subclass")
            if cls.name in _registry.ops:
                raise ValueError(f"op name {cls.name!r} is already taken (by {_registry.origin[cls.name]})")
            _registry.ops[cls.name] = cls()
            _registry.origin[cls.name] = ep.dist.name if ep.dist else ep.value
        except Exception as err:  # a broken plugin must not break the tool
            _registry.broken[ep.name] = f"{type(err).__name__}: {err}"


def ops() -> dict[str, Op]:
    """Every available op by name (in-tree and plugins), loading them on first use."""
    if not _registry.loaded:
        _load_in_tree()
        _registry.ops.update(_IN_TREE)
        _registry.origin.update({name: "arspec" for name in _IN_TREE})
        _load_plugins()
        _registry.loaded = True
        _registry.generation += 1
    return _registry.ops


def get_op(name: str) -> Op | None:
    return ops().get(name)


def op_origin(name: str) -> str:
    ops()
    return _registry.origin.get(name, "")


def broken_ops() -> dict[str, str]:
    """Plugin ops whose entry point failed to load, with the reason."""
    ops()
    return dict(_registry.broken)


def generation() -> int:
    """Changes whenever the set of ops changes (caches built from it compare this)."""
    ops()
    return _registry.generation


def rescan() -> None:
    """Forget plugins (after installing one in a running process); in-tree ops stay."""
    _registry.ops.clear()
    _registry.origin.clear()
    _registry.broken.clear()
    _registry.loaded = False
