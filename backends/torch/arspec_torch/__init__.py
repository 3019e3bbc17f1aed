"""The in-tree torch backend. It registers through the `arspec.backends` entry point like any
third-party backend would (see pyproject.toml); the core never imports it."""
from arspec.backends import Backend
from arspec_torch.compile import compile_model

backend = Backend(
    name="torch",
    compile=compile_model,
    description="PyTorch modules on CPU or CUDA (masks as exact-zero weight masks)",
    devices=("cpu", "cuda"),
)

__all__ = ["backend", "compile_model"]
