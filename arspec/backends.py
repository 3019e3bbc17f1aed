"""The backend registry. Backends are found only through the `arspec.backends` entry-point group,
so in-tree backends register exactly as a third-party package would. A backend that fails to load
is reported by name and skipped; it never breaks the tool."""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable

GROUP = "arspec.backends"


@dataclass
class Backend:
    """What a backend provides: `compile(spec, device=..., **options)` returning an ARModel."""

    name: str
    compile: Callable[..., Any]
    description: str = ""
    devices: tuple[str, ...] = ("cpu",)


class BackendError(RuntimeError):
    """No usable backend of that name."""


@dataclass
class _Registry:
    loaded: dict[str, Backend] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)
    scanned: bool = False


_registry = _Registry()


def _scan() -> None:
    if _registry.scanned:
        return
    _registry.scanned = True
    for ep in entry_points(group=GROUP):
        try:
            obj = ep.load()
            backend = obj() if callable(obj) and not isinstance(obj, Backend) else obj
            if not isinstance(backend, Backend):
                raise TypeError(f"entry point gave {type(backend).__name__}, not arspec.backends.Backend")
            _registry.loaded.setdefault(ep.name, backend)
        except Exception as err:  # a broken plugin must not break the tool
            _registry.broken[ep.name] = f"{type(err).__name__}: {err}"


def rescan() -> None:
    """Forget what was found (after installing a backend in a running process)."""
    _registry.loaded.clear()
    _registry.broken.clear()
    _registry.scanned = False


def available_backends() -> list[str]:
    """Names of the backends that loaded."""
    _scan()
    return sorted(_registry.loaded)


def broken_backends() -> dict[str, str]:
    """Backends whose entry point failed to load, with the reason."""
    _scan()
    return dict(_registry.broken)


def get_backend(name: str) -> Backend:
    _scan()
    if name in _registry.loaded:
        return _registry.loaded[name]
    if name in _registry.broken:
        raise BackendError(f"backend {name!r} is installed but failed to load: {_registry.broken[name]}")
    known = ", ".join(available_backends()) or "none installed"
    raise BackendError(f"unknown backend {name!r} (available: {known})")
