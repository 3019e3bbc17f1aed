"""The runtime a generated file carries: the definitions it needs from arspec_torch's standalone
modules (kernels, distributions, the ARModel class, the cached samplers), copied verbatim with
whatever top-level definitions they use, in their modules' order. One source for both backends."""
from __future__ import annotations

import ast
import inspect
from types import ModuleType

HEADER_IMPORTS = """\
from __future__ import annotations

import base64
import contextlib
import ctypes
import functools
import hashlib
import json
import math
import os
import platform
import shutil
import stat
import subprocess
import tempfile
import warnings
import zlib
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.weak import WeakIdKeyDictionary

try:
    from scipy.special import expit
except ImportError:
    def expit(x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-x))
"""


def imports_for(body: str) -> str:
    """HEADER_IMPORTS without the lines whose names the code of `body` never uses (a plain export
    needs far fewer modules than one that carries the compiled samplers). Names are taken from the
    code's tokens only, never from strings or comments, so no text of a spec decides an import."""
    import io
    import re
    import tokenize
    names = {t.string for t in tokenize.generate_tokens(io.StringIO(body).readline) if t.type == tokenize.NAME}
    kept = []
    for line in HEADER_IMPORTS.splitlines():
        imported = re.findall(r"import (.+)$", line)
        if not imported or line.startswith("from __future__"):
            kept.append(line)
            continue
        if any(n.strip().split(" as ")[-1] in names for n in imported[0].split(",")):
            kept.append(line)
    text = "\n".join(kept)
    if "expit" not in names:
        text = text.split("\ntry:")[0]
    return re.sub(r"\n{3,}", "\n\n", text).rstrip() + "\n"


def _top_level(module: ModuleType) -> tuple[str, list[tuple[set[str], ast.stmt]]]:
    """The module's source and its top-level definitions (names defined, statement), imports and
    docstring and `__all__` left out."""
    source = inspect.getsource(module)
    out = []
    for stmt in ast.parse(source).body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)) or (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)):
            continue
        if isinstance(stmt, (ast.FunctionDef, ast.ClassDef)):
            names = {stmt.name}
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            names = {t.id for t in targets if isinstance(t, ast.Name)}
        else:
            continue
        if names == {"__all__"}:
            continue
        out.append((names, stmt))
    return source, out


def extract(module: ModuleType, wanted: set[str], skip: frozenset[str] = frozenset()) -> str:
    """The source of the `wanted` top-level definitions of `module` and of every top-level
    definition they reference (transitively), except `skip`, in module order."""
    source, defs = _top_level(module)
    by_name = {n: stmt for names, stmt in defs for n in names}
    needed: set[str] = set()
    todo = [n for n in wanted if n in by_name]
    while todo:
        name = todo.pop()
        if name in needed or name in skip:
            continue
        needed.add(name)
        for node in ast.walk(by_name[name]):
            ref = node.id if isinstance(node, ast.Name) else None
            if ref in by_name and ref not in needed:
                todo.append(ref)
    lines = source.splitlines()
    chunks = []
    for names, stmt in defs:
        if names & needed:
            start = min([d.lineno for d in getattr(stmt, "decorator_list", [])] + [stmt.lineno])
            chunks.append("\n".join(lines[start - 1:stmt.end_lineno]))
    return "\n\n\n".join(chunks)
