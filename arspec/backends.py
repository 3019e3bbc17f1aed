"""The backend contract and registry.

A backend is a typed function of the IR: `compile(ir, options) -> ARModel` (see CONTRACT.md for
the ARModel members), plus the set of primitive kinds it implements, and optionally `export(ir)
-> source text` for code-generating backends. Backends are found only through the
`arspec.backends` entry-point group, so in-tree backends register exactly as a third-party package
would. A backend that fails to load is reported by name and skipped; it never breaks the tool."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol

from arspec.primitives.step import DeclaredPrimitive

if TYPE_CHECKING:
    from arspec.ir.graph import IRGraph

GROUP = "arspec.backends"


@dataclass(frozen=True)
class CompileOptions:
    """What `arspec.compile` passes on: the device, a dtype (the backend's own object or its name,
    e.g. "float64"), and a seed that makes the initial weights reproducible."""

    device: Any = "cpu"
    dtype: Any = None
    seed: int | None = None


class ARModel(Protocol):
    """The members every backend's model has (CONTRACT.md); tools rely on nothing else."""

    event_shape: tuple[int, ...]

    def log_prob_elements(self, x: Any, **context: Any) -> Any: ...
    def log_prob(self, x: Any, **context: Any) -> Any: ...
    def sample(self, n: int, generator: Any = None, cache: bool = True, **context: Any) -> Any: ...
    def example_inputs(self, batch_size: int, generator: Any = None) -> tuple[Any, dict[str, Any]]: ...


CompileFn = Callable[["IRGraph", CompileOptions], ARModel]
ExportFn = Callable[..., str]                       # (ir, fast_sampler=False) -> source text
CompositeFn = Callable[[Any, CompileOptions], Any]


@dataclass(frozen=True)
class Backend:
    """What a backend provides."""

    name: str
    compile: CompileFn
    primitives: frozenset[str]
    description: str = ""
    devices: tuple[str, ...] = ("cpu",)
    export: ExportFn | None = None
    compile_composite: CompositeFn | None = None   # models of several parts (arspec.composite.ir.CompositeIR)
    declared: bool = False                          # runs any primitive declared by its step (arspec.primitives.step)

    def missing_primitives(self, ir: IRGraph) -> dict[str, list[str]]:
        """Primitive kinds the IR uses that this backend does not implement, with the nodes using them."""
        missing: dict[str, list[str]] = {}
        for node in ir.op_nodes():
            assert node.program is not None
            for call in node.program.calls:
                runs = call.primitive.kind in self.primitives or (self.declared and isinstance(call.primitive, DeclaredPrimitive))
                if not runs:
                    missing.setdefault(call.primitive.kind, []).append(node.name)
        return missing


class BackendError(RuntimeError):
    """No usable backend of that name, or it cannot compile this model."""


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


def compile_composite(ir: Any, backend: str = "torch", options: CompileOptions | None = None) -> Any:
    """Compile a model of several parts (a CompositeIR) with a backend that builds such models."""
    chosen = get_backend(backend)
    if chosen.compile_composite is None:
        raise BackendError(f"backend {backend!r} does not build models of several parts (parts:); use the torch backend")
    for part in ir.parts:
        missing = chosen.missing_primitives(part)
        if missing:
            raise BackendError(f"backend {backend!r} does not implement the primitive(s) {', '.join(missing)}")
    return chosen.compile_composite(ir, options or CompileOptions())


def compile_ir(ir: IRGraph, backend: str = "torch", options: CompileOptions | None = None) -> ARModel:
    """Compile an IR with the named backend, after checking that it implements every primitive."""
    chosen = get_backend(backend)
    missing = chosen.missing_primitives(ir)
    if missing:
        needs = "; ".join(f"{kind} (used by {', '.join(sorted(set(nodes))[:3])})" for kind, nodes in missing.items())
        raise BackendError(f"backend {backend!r} does not implement the primitive(s) {needs}")
    return chosen.compile(ir, options or CompileOptions())
