"""Compiling through generated code: write the file, import it, build its Model."""
from __future__ import annotations

import hashlib
import importlib.util
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from arspec_torch.compile import torch_dtype

from arspec.backends import CompileOptions
from arspec.ir.graph import IRGraph
from arspec_torch_codegen.emit import emit


def import_source(source: str, name: str) -> ModuleType:
    """Import generated source as a module (from a file, so tracebacks and torch.compile see its lines)."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / "arspec-codegen"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}_{digest}.py"
    if not path.exists():
        tmp = path.with_suffix(f".{digest}.tmp")
        tmp.write_text(source)
        tmp.replace(path)
    module_name = f"arspec_generated_{name}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def compile_model(ir: IRGraph, options: CompileOptions) -> Any:
    """The generated file's Model on a device (the same seed gives the interpreter's initial weights)."""
    module = import_source(emit(ir), "".join(ch if ch.isalnum() else "_" for ch in ir.name))
    if options.seed is not None:
        torch.manual_seed(options.seed)
    model = module.Model()
    model.generated_source = Path(module.__file__ or "")
    return model.to(device=options.device, dtype=torch_dtype(options.dtype))
