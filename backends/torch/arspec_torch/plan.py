"""From the IR to a flat plan: every primitive call of every node, in topological order, with the
value ids its arguments read, the parameters and buffers it owns (named `<node>__<call>__<name>`)
and the taps cached generation needs. Both torch backends build their modules from a plan."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from arspec.ir.graph import IRGraph, IRNode
from arspec.primitives import Param
from arspec.primitives.program import Call
from arspec.primitives.step import step_program
from arspec_torch.cache import StepCall


@dataclass
class PlanCall:
    """One call of the plan: what the samplers see (`step`) and where it came from."""

    step: StepCall
    node: IRNode
    call: Call
    params: dict[str, Param]
    buffers: dict[str, np.ndarray]


@dataclass
class ContextInput:
    """A context input as the network receives it: global (one-hot of `size` classes) or local."""

    name: str
    id: str
    kind: str
    size: int


@dataclass
class Plan:
    calls: list[PlanCall] = field(default_factory=list)
    output: str = ""
    contexts: list[ContextInput] = field(default_factory=list)
    mask_sets: int = 1
    node_values: dict[str, str] = field(default_factory=dict)    # node name -> the value id holding its output


def _source_ids(ir: IRGraph) -> tuple[dict[str, str], list[ContextInput]]:
    """The value id of the data and of every context input."""
    ids: dict[str, str] = {"x": "x"}
    contexts = []
    for node in ir:
        if node.kind != "context":
            continue
        ids[node.name] = f"ctx__{node.ident}"
        public = node.name.removesuffix("@low")
        kind = "local" if node.type.spatial else "global"
        contexts.append(ContextInput(public, ids[node.name], kind, node.type.channels))
    return ids, contexts


MAX_ATTENTION_TOKENS = 65_536      # a dense T x T mask and scores per head beyond this is no model to run


def plan_of(ir: IRGraph) -> Plan:
    """The plan of an IR (see module docstring). Refuses (BackendError) an attention layer whose
    dense mask could not be allocated, before anything is."""
    ids, contexts = _source_ids(ir)
    _guard_attention(ir)
    plan = Plan(contexts=contexts, mask_sets=ir.ctx.masks)
    rank = len(ir.ctx.spatial)
    for node in ir.op_nodes():
        program = node.program
        assert program is not None
        env = {name: ids[i] for name, i in zip(program.inputs, node.all_inputs)}
        for call in program.calls:
            p = call.primitive
            args = tuple("x_raw" if env[a] == "x" and p.reads_raw else env[a] for a in call.args)
            taps = p.taps(rank, len(args))
            step = StepCall(f"{node.ident}__{call.name}", p.kind, args, tuple(p.params()) + tuple(p.buffers()), p.attrs(),
                            call.type.channels, tuple(t.offsets for t in taps) if taps is not None else None,
                            tuple(t.live for t in taps) if taps is not None else None, p.mask_sets, p.scan_role,
                            p.uses_training_mode, p.per_element, step_program(p, call.arg_types, call.type))
            plan.calls.append(PlanCall(step, node, call, p.params(), p.buffers()))
            env[call.name] = step.id
        ids[node.name] = env[program.output]
    plan.output = ids[ir.output]
    plan.node_values = dict(ids)
    return plan


def _guard_attention(ir: IRGraph) -> None:
    from arspec.backends import BackendError
    for node in ir.op_nodes():
        assert node.program is not None
        for call in node.program.calls:
            pattern = getattr(call.primitive, "pattern", None)
            if call.primitive.kind == "attend" and pattern is not None and pattern.tokens > MAX_ATTENTION_TOKENS:
                gib = pattern.tokens ** 2 / 2 ** 30
                raise BackendError(f"node {node.name!r} attends over {pattern.tokens:,} tokens: its dense mask alone has "
                                   f"{pattern.tokens ** 2:,} entries ({gib:,.0f} GiB), and the scores as many per head and item "
                                   f"(limit {MAX_ATTENTION_TOKENS:,} tokens); attend at a coarser resolution or over a smaller "
                                   f"event (the analysis itself works at any size: arspec check)")


def conditioning_of(ir: IRGraph) -> dict[str, dict[str, Any]]:
    """The spec's conditioning as plain data (what ARModel takes)."""
    out: dict[str, dict[str, Any]] = {}
    for name, c in ir.conditioning.items():
        if c.type == "global":
            out[name] = {"type": "global", "classes": c.classes}
        else:
            out[name] = {"type": "local", "channels": c.channels, "upsample": c.upsample}
    return out
