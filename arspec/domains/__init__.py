"""Dependency sets of IR tensors, in two exact abstract domains sharing one set of primitives.

* `ConcreteDeps` — for each position, which of N chosen data elements it reads (exact everywhere).
* `OffsetDeps` — for each relative offset, which data channels it reads (exact for any image size
  for translation-equivariant graphs).

Primitives never touch the arrays: they call `conv` (strided too), `dense`, `union`, `select`,
`concat`, `closure` (recurrences), `broadcast_all` and `depth_to_space`. A rule the offset domain
cannot express exactly raises `NotTranslationEquivariant`, and the analysis falls back to the
per-position domain."""
from arspec.domains.base import Deps, NotTranslationEquivariant, shift_array
from arspec.domains.concrete import ConcreteDeps
from arspec.domains.offsets import OffsetDeps

__all__ = ["ConcreteDeps", "Deps", "NotTranslationEquivariant", "OffsetDeps", "shift_array"]
