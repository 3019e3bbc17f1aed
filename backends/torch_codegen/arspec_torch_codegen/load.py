"""Compiling through generated code: write the file, run it as a module, build its Model.

What runs is always the text just generated, compiled from memory: the file is written (to a
folder private to this user, atomically) only so that tracebacks, `inspect` and `torch.compile`
see its lines. A file planted under that name is replaced, never imported."""
from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from arspec_torch.ccache import cache_root, private_dir, write_atomically
from arspec_torch.compile import torch_dtype

from arspec.backends import CompileOptions
from arspec.ir.graph import IRGraph
from arspec_torch_codegen.emit import emit


def source_folder() -> Path:
    """Where generated modules are written: `codegen` in the private cache folder."""
    return private_dir(cache_root() / "codegen")


def import_source(source: str, name: str) -> ModuleType:
    """Run generated source as a module named after `name` and the source's hash. The file beside
    it holds the same text (rewritten if anything else is found there)."""
    data = source.encode()
    digest = hashlib.sha256(data).hexdigest()
    stem = re.sub(r"[^A-Za-z0-9_]", "_", name)[:48] or "model"
    path = source_folder() / f"{stem}_{digest[:16]}.py"
    try:
        current = path.read_bytes()
    except OSError:
        current = None
    if current != data:
        write_atomically(path, data)
    module_name = f"arspec_generated_{stem}_{digest[:16]}"
    module = ModuleType(module_name)
    module.__file__ = str(path)
    code = compile(source, str(path), "exec")      # the text in hand, not whatever the file holds by now
    sys.modules[module_name] = module               # dataclasses look their module up while it runs
    try:
        exec(code, module.__dict__)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def compile_model(ir: IRGraph, options: CompileOptions) -> Any:
    """The generated file's Model on a device (the same seed gives the interpreter's initial weights)."""
    module = import_source(emit(ir, fast_sampler=True), ir.name)
    if options.seed is not None:
        torch.manual_seed(options.seed)
    model = module.Model()
    model.generated_source = Path(module.__file__ or "")
    return model.to(device=options.device, dtype=torch_dtype(options.dtype))
