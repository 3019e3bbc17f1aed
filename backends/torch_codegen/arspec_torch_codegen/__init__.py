"""The code-generating torch backend: `arspec export SPEC -o model.py` writes one readable,
standalone PyTorch file per spec; compiling through it imports that file. It implements the same
primitives as the interpreter, because the generated file carries the interpreter's own kernels."""
from arspec_torch import backend as torch_backend

from arspec.backends import Backend
from arspec_torch_codegen.emit import emit
from arspec_torch_codegen.load import compile_model

backend = Backend(
    name="torch-codegen",
    compile=compile_model,
    primitives=torch_backend.primitives,
    description="standalone generated PyTorch code (arspec export); compiles by importing it",
    devices=("cpu", "cuda"),
    export=emit,
    declared=True,
)

__all__ = ["backend", "compile_model", "emit"]
