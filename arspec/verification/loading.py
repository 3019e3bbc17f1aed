"""Finding the model to verify: `FILE.py:NAME` or `package.module:NAME`, where NAME is an
nn.Module class or a function returning one (called without arguments), or a module instance."""
from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from arspec.errors import UsageError


def load_object(target: str, flag: str) -> Any:
    """The object NAME of `FILE.py:NAME` or `package.module:NAME` (the file is run: trusted code)."""
    source, sep, name = target.rpartition(":")
    if not sep or not source or not name:
        raise UsageError(f"{flag} {target}: expected FILE.py:NAME or package.module:NAME")
    if source.endswith(".py"):
        path = Path(source)
        if not path.is_file():
            raise UsageError(f"{flag} {target}: no such file: {source}")
        module_name = f"arspec_verify_target_{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise UsageError(f"{flag} {target}: cannot load {source}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        sys.path.insert(0, str(path.resolve().parent))
        try:
            spec.loader.exec_module(module)
        except Exception as err:              # the user's file failed: say where, in one line
            raise UsageError(f"{flag} {target}: running {source} raised {type(err).__name__}: {err}") from None
        finally:
            sys.path.remove(str(path.resolve().parent))
    else:
        try:
            module = importlib.import_module(source)
        except Exception as err:
            raise UsageError(f"{flag} {target}: cannot import {source} ({type(err).__name__}: {err})") from None
    if not hasattr(module, name):
        raise UsageError(f"{flag} {target}: {source} has no {name!r}")
    return getattr(module, name)


def load_module(target: str) -> Any:
    """The nn.Module a target names (a class or function called without arguments)."""
    import torch
    obj = load_object(target, "verify")
    if isinstance(obj, torch.nn.Module):
        return obj
    if not callable(obj):
        raise UsageError(f"verify {target}: {obj!r} is neither an nn.Module nor a function or class making one")
    try:
        built = obj()
    except Exception as err:
        raise UsageError(f"verify {target}: calling {target.rpartition(':')[2]}() raised {type(err).__name__}: {err}") from None
    if not isinstance(built, torch.nn.Module):
        raise UsageError(f"verify {target}: {target.rpartition(':')[2]}() gave {type(built).__name__}, not an nn.Module")
    return built
