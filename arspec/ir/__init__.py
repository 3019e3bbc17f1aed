"""The IR: a networkx graph of typed op instances with inferred shapes."""
from arspec.ir.graph import IRGraph, IRNode

__all__ = ["IRGraph", "IRNode"]
