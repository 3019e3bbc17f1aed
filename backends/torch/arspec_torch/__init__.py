"""The in-tree torch backend: an interpreter over the IR's primitive programs. It registers through
the `arspec.backends` entry point like any third-party backend would; the core never imports it."""
from arspec.backends import Backend
from arspec_torch.compile import compile_composite, compile_model
from arspec_torch.kernels import KERNELS

backend = Backend(
    name="torch",
    compile=compile_model,
    primitives=frozenset(KERNELS),
    description="PyTorch modules on CPU or CUDA (masks as exact-zero weight masks)",
    devices=("cpu", "cuda"),
    compile_composite=compile_composite,
    declared=True,
)

__all__ = ["backend", "compile_model"]
