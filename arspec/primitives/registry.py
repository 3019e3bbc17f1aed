"""Primitives from other packages, through the `arspec.primitives` entry-point group, loaded when
asked (never frozen at import):

    [project.entry-points."arspec.primitives"]
    spatial_lstm = "arspec_spatial_lstm.primitive:SpatialLstm"     # a DeclaredPrimitive subclass

A package's ops build its primitives directly; the registry is what tools list and what backends
consult (a backend that runs declared primitives runs these). A broken entry is reported by name
and skipped."""
from __future__ import annotations

from importlib.metadata import entry_points

from arspec.primitives.base import Primitive

GROUP = "arspec.primitives"


def plugin_primitives() -> tuple[dict[str, tuple[type[Primitive], str]], dict[str, str]]:
    """(kind -> (class, package), name -> why it failed) for the installed plugin primitives."""
    found: dict[str, tuple[type[Primitive], str]] = {}
    broken: dict[str, str] = {}
    for ep in entry_points(group=GROUP):
        try:
            cls = ep.load()
            if not (isinstance(cls, type) and issubclass(cls, Primitive)):
                raise TypeError(f"entry point gave {cls!r}, not an arspec.primitives.Primitive subclass")
            found[cls.kind] = (cls, ep.dist.name if ep.dist else ep.value)
        except Exception as err:      # a broken plugin must not break the tool
            broken[ep.name] = f"{type(err).__name__}: {err}"
    return found, broken
