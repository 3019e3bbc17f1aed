"""The IR: a networkx graph of typed nodes, each computing node carrying a program of primitives."""
from arspec.ir.graph import IRGraph, IRNode, ParamEntry, SpecSource

__all__ = ["IRGraph", "IRNode", "ParamEntry", "SpecSource"]
