"""Writing the standalone file: the runtime it needs (copied from arspec_torch), the constant arrays,
a `Network` whose forward is straight-line code with the spec's node names in comments, the plan
of the cached sampler, and a `Model` (an ARModel: log_prob, sample with the cache, ...)."""
from __future__ import annotations

import ast
import base64
import zlib
from typing import Any

import numpy as np
from arspec_torch import armodel, cache, ccache, cstep, declared, distributions, kernels, keyhistory, staticstep, stepplan
from arspec_torch.compile import orders_of
from arspec_torch.fusion import running_sum_terms
from arspec_torch.plan import Plan, PlanCall, conditioning_of, plan_of

import arspec
import arspec.domains.base as domains_base
import arspec.primitives.step as step_ir
from arspec.identifiers import is_python_name
from arspec.ir.graph import IRGraph, IRNode
from arspec_torch_codegen.runtime_source import extract, imports_for

ARRAY_HELPER = '''\
def _array(dtype: str, shape: tuple[int, ...], data: str) -> torch.Tensor:
    """A constant array stored in this file as zlib-compressed base64 text (bool: bit-packed)."""
    raw = zlib.decompress(base64.b64decode(data))
    count = math.prod(shape)
    if dtype == "bool":
        values = np.unpackbits(np.frombuffer(raw, dtype=np.uint8))[:count].astype(bool)
    else:
        values = np.frombuffer(raw, dtype=dtype)[:count]
    return torch.from_numpy(values.reshape(shape).copy())'''


def name(text: str) -> str:
    """`text` where generated code needs a Python name: refused unless it is a plain ASCII
    identifier and no keyword (the loader validates every name a spec gives; this is the
    emitter's own guarantee, whatever IR it is handed)."""
    if not is_python_name(text):
        raise ValueError(f"{text!r} is not a plain ASCII identifier; generated code takes no other names")
    return text


def comment(text: str) -> str:
    """`text` as the body of a `#` comment: one line of printable ASCII (anything else escaped as
    repr() escapes it), so nothing in it can end the comment and start a statement."""
    return text if text.isascii() and text.isprintable() else ascii(text)[1:-1]


#: the kernels the cached samplers call besides the model's own (attention's key history, norms in a step)
CACHE_KERNELS = {"attend_tokens", "attention_allowed", "attention_tokens", "attention_untokens", "channel_norm", "conv_lstm_step"}


def string_literal(text: str) -> str:
    """A Python literal whose value is exactly `text`: a readable triple-quoted string where that
    parses back to `text` and nothing else, repr() otherwise."""
    readable = '"""' + text + '"""'
    if all(ch == "\n" or ch.isprintable() for ch in text):
        try:
            tree = ast.parse(readable, mode="eval")
        except SyntaxError:
            tree = None
        if tree is not None and isinstance(tree.body, ast.Constant) and tree.body.value == text:
            return readable
    return repr(text)


def _banner(title: str) -> str:
    title = comment(title)
    return f"# {'-' * 4} {title} {'-' * max(4, 94 - len(title))}"


def array_literal(array: np.ndarray, indent: int) -> str:
    """`_array(...)` source for a numpy array, the text wrapped to stay readable."""
    array = np.asarray(array)
    if array.dtype == bool:
        dtype, payload = "bool", np.packbits(array.reshape(-1)).tobytes()
    else:
        dtype = "int64" if array.dtype.kind in "iu" else "float32"
        payload = array.astype(dtype).tobytes()
    text = base64.b64encode(zlib.compress(payload, 9)).decode("ascii")
    pad = " " * (indent + 4)
    lines = [text[i:i + 96] for i in range(0, len(text), 96)] or [""]
    body = "\n".join(f'{pad}"{line}"' for line in lines)
    return f'_array("{dtype}", {tuple(array.shape)!r}, (\n{body}))'


def _where(node: IRNode) -> str:
    """A comment naming a node, its op and where the spec wrote it."""
    op = node.op.name if node.op is not None else node.kind
    loc = f" ({node.location.file}:{node.location.line})" if node.location else ""
    return "# " + comment(f"{node.name}: {op}{loc}")


def _call_expr(pc: PlanCall, prefix: str = "self.") -> str:
    step = pc.step
    parts = [name(a) for a in step.args]
    parts += [f"{name(t)}={prefix}{name(step.id)}__{name(t)}" for t in step.tensors]
    parts += [f"{name(k)}={v!r}" for k, v in step.attrs.items()]
    if step.mask_sets:
        parts.append(f"active={prefix}active")
    if step.training:
        parts.append(f"training={prefix}training")
    # a declared primitive without a fast kernel of its own: its step, evaluated
    function = "declared" if "program" in step.attrs and step.kind not in kernels.KERNELS else name(step.kind)
    return f"{function}({', '.join(parts)})"


def _network_init(plan: Plan) -> list[str]:
    lines, current = [], None
    for pc in plan.calls:
        if pc.node.name != current:
            current = pc.node.name
            lines.append(f"        {_where(pc.node)}")
        for pname, param in pc.params.items():
            shape = tuple(int(s) for s in param.shape)
            lines.append(f"        self.{name(pc.step.id)}__{name(pname)} = nn.Parameter(torch.empty({shape!r}))")
        for bname, array in pc.buffers.items():
            suffix = ".float()" if np.asarray(array).dtype == bool else ""
            buffer = f"{name(pc.step.id)}__{name(bname)}"
            lines.append(f'        self.register_buffer({buffer!r}, {array_literal(array, 8)}{suffix}, persistent=False)')
    return lines


def _reset_parameters(plan: Plan) -> list[str]:
    lines = [f'        init_parameter(self.{name(pc.step.id)}__{name(pname)}, {str(p.init)!r}, {float(p.scale)!r})'
             for pc in plan.calls for pname, p in pc.params.items()]
    return lines or ["        pass"]


def _forward(plan: Plan) -> list[str]:
    """Network.forward: one line per call, each value deleted after its last reader. A sum of
    three values or more (WaveNet's skips) is a running sum, each term added as soon as it and the
    sum so far exist (as hand-written code writes `skip = skip + s`), so the terms are never all
    alive at once."""
    running = running_sum_terms([pc.step.id for pc in plan.calls], {pc.step.id: pc.step.args for pc in plan.calls if pc.step.kind == "add"})
    after: dict[int, list[tuple[str, str, tuple[str, ...]]]] = {}           # statements after call i: (target, expression, reads)
    for total, terms in running.items():
        so_far = terms[0][0]
        for term, at in terms[1:]:                                     # at: the sum so far and this term both exist
            after.setdefault(at, []).append((total, f"{name(so_far)} + {name(term)}", (so_far, term)))
            so_far = total
    statements: list[tuple[Any, str, str, tuple[str, ...]]] = list((None, *entry) for entry in after.get(-1, []))
    for i, pc in enumerate(plan.calls):
        if pc.step.id not in running:
            statements.append((pc.node, pc.step.id, _call_expr(pc), tuple(pc.step.args)))
        statements += [(None, *entry) for entry in after.get(i, [])]
    last_use: dict[str, int] = {}
    for k, (_, target, _, reads) in enumerate(statements):
        for a in reads:
            if a != target:
                last_use[a] = k
    lines, current = [], None
    for c in plan.contexts:
        lines.append(f"        {name(c.id)} = {_context_value(c, 'x.dtype')}")
    for k, (node, target, expression, reads) in enumerate(statements):
        if node is not None and node.name != current:
            current = node.name
            lines.append(f"        {_where(node)}")
        lines.append(f"        {name(target)} = {expression}")
        dead = [name(a) for a in dict.fromkeys(reads) if last_use.get(a) == k and a != plan.output and a not in ("x", "x_raw")]
        if dead:
            lines.append(f"        del {', '.join(dead)}")
    lines.append(f"        return {name(plan.output)}")
    return lines


def _context_value(c: Any, dtype: str) -> str:
    """The expression reading one context input (a global one one-hot encoded) in `dtype`."""
    if c.kind == "global":
        return f"F.one_hot(context[{str(c.name)!r}].long(), {int(c.size)}).to({dtype})"
    return f"context[{str(c.name)!r}].to({dtype})"


def _network(ir: IRGraph, plan: Plan) -> str:
    contexts = ", ".join(f"{name(c.id)!r}: {_context_value(c, 'dtype')}" for c in plan.contexts)
    return "\n".join([
        "class Network(nn.Module):",
        "    " + string_literal(f"The graph of {ir.name}: (x as class indices, x encoded, context) -> distribution parameters."),
        "",
        f"    mask_sets = {int(plan.mask_sets)}",
        "",
        "    def __init__(self) -> None:",
        "        super().__init__()",
        "        self.active = 0",
        *_network_init(plan),
        "        self.reset_parameters()",
        "",
        "    def reset_parameters(self) -> None:",
        '        """arspec\'s initialisation (with the same seed, the same weights as its torch backend)."""',
        *_reset_parameters(plan),
        "",
        "    def context_values(self, context: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:",
        f"        return {{{contexts}}}",
        "",
        "    def forward(self, x_raw: torch.Tensor, x: torch.Tensor, context: dict[str, torch.Tensor]) -> torch.Tensor:",
        *_forward(plan),
    ])


def _steps(plan: Plan) -> str:
    lines = ["STEPS = ["]
    for pc in plan.calls:
        s = pc.step
        lines.append(f"    StepCall({s.id!r}, {s.kind!r}, {s.args!r}, {s.tensors!r}, {s.attrs!r}, {int(s.channels)}, {s.taps!r}, {s.live!r}, "
                     f"{s.mask_sets!r}, {s.scan_role!r}, {s.training!r}, {s.per_element!r}, {s.step!r}),")
    lines.append("]")
    return "\n".join(lines)


DISTRIBUTIONS = {"bernoulli": "Bernoulli", "categorical": "Categorical", "discretized_logistic_mixture": "DiscretizedLogisticMixture",
                 "gaussian_mixture": "GaussianMixture", "laplace_mixture": "LaplaceMixture", "logistic_mixture": "LogisticMixture"}


def _distribution(ir: IRGraph) -> tuple[str, str]:
    """The distribution class the file needs, and the expression building it."""
    d = ir.distribution
    if d.kind == "discretized_logistic_mixture" and d.couples_channels:
        return "CoupledLogisticMixture", f"CoupledLogisticMixture({d.classes}, {d.mixtures}, {d.coupled_channels})"
    cls = DISTRIBUTIONS[d.kind]
    args = {"bernoulli": "", "categorical": f"{d.classes}", "discretized_logistic_mixture": f"{d.classes}, {d.mixtures}",
            "gaussian_mixture": f"{d.mixtures}, {d.min_scale!r}", "laplace_mixture": f"{d.mixtures}, {d.min_scale!r}",
            "logistic_mixture": f"{d.mixtures}, {d.min_scale!r}"}[d.kind]
    return cls, f"{cls}({args})"


def _model(ir: IRGraph, plan: Plan, distribution: str, orders: np.ndarray, fast_sampler: bool) -> str:
    conditioning: dict[str, Any] = conditioning_of(ir)
    return "\n".join([
        "class Model(ARModel):",
        "    " + string_literal(f"{ir.name}{': ' + _description(ir) if _description(ir) else ''}"),
        "",
        "    def __init__(self) -> None:",
        f"        orders = {array_literal(orders, 8)}.numpy()",
        f"        super().__init__(Network(), {distribution}, event_shape={tuple(ir.event_shape)!r}, orders=orders,",
        f"                         conditioning={conditioning!r}, dense_output={ir.dense_output!r},",
        f"                         agnostic={ir.ctx.agnostic!r}, ordering_seed={ir.ctx.ordering_seed!r})",
        f"        self.incremental = {'None' if ir.ctx.agnostic or not fast_sampler else 'cache_for(STEPS, ' + repr(plan.output) + ', self.internal_shape, orders, ' + repr(ir.dense_output) + ')'}",
    ])


def _description(ir: IRGraph) -> str:
    """The spec's description on one line."""
    return " ".join(ir.description.split())


def emit(ir: IRGraph, fast_sampler: bool = False) -> str:
    """The standalone source of the model described by `ir`: plain PyTorch (the network, log_prob,
    sampling one pass per step) in a few hundred lines, or with `fast_sampler` also the cached
    samplers (the CPU's step plan with its C runtime, the accelerators' static program)."""
    plan = plan_of(ir)
    kinds = sorted({pc.step.kind for pc in plan.calls if pc.step.kind in kernels.KERNELS})
    has_declared = any("program" in pc.step.attrs for pc in plan.calls)
    dist_class, dist_expr = _distribution(ir)
    orders = orders_of(ir)
    origin = ir.source.filename if ir.source else "<spec>"
    overrides = f" with {', '.join(ir.source.overrides)}" if ir.source and ir.source.overrides else ""
    sampler = ("`sample` uses the cached samplers\n(ring buffers, a C step compiled on first use)" if fast_sampler
               else "`sample` runs one pass per generation\nstep (export with --with-fast-sampler for the cached samplers)")
    doc = string_literal(f"""{ir.name}, generated by arspec {arspec.__version__} (backend torch-codegen) from {origin}{overrides}.

Standalone: it needs torch and numpy, nothing from arspec. `Model()` is an nn.Module with
`log_prob(x, **context)`, `log_prob_elements`, `sample(n, generator=None, **context)` and `forward`
(distribution parameters); {sampler}. Its weights have the names arspec's torch backend uses, so
`model.load_state_dict(safetensors.torch.load_file("weights.safetensors"))` loads exported weights.
Sections: runtime (copied from arspec_torch: kernels, distribution, ARModel), constant arrays, then
the model itself — the `Network` below is straight-line code, node by node.""")
    sections = [
        _banner("runtime: the primitives' kernels"),
        extract(kernels, set(kinds) | {"init_parameter"} | (CACHE_KERNELS if fast_sampler else set()), skip=frozenset({"KERNELS"})),
        "KERNELS: dict[str, Callable[..., torch.Tensor]] = {" + ", ".join(f"{k!r}: {name(k)}" for k in kinds) + "}",
    ]
    if has_declared or fast_sampler:
        sections += [_banner("runtime: primitives declared by their step"), extract(step_ir, {"StepOp", "DeclaredStep"}),
                     extract(declared, {"declared", "evaluate", "tap_table", "wavefronts", "flat"} | ({"scan_order", "scan_rank"} if fast_sampler else set()))]
    sections += [_banner("runtime: the distribution"), extract(distributions, {dist_class}),
                 _banner("runtime: the autoregressive model"), extract(armodel, {"ARModel"})]
    if fast_sampler:
        sections += [
            _banner("runtime: cached generation"),
            extract(keyhistory, {"KeyHistory", "attention_op", "history_of", "attend_rows"}),
            extract(stepplan, {"StepPlan", "StepProgram", "constant_values", "data_dependent", "single_threaded_blas", "update_frame_values"}),
            extract(ccache, {"load_library", "compiler"}),
            extract(cstep, {"CStepProgram", "c_step_available", "c_step_missing"}),
            extract(staticstep, {"StaticStepProgram", "GraphedLoop"}),
            extract(domains_base, {"shift_array"}),
            extract(cache, {"StepCall", "cache_for", "run_call"}),
        ]
    sections += [_banner("constant arrays"), ARRAY_HELPER, _banner(f"the model: {ir.name}"), _network(ir, plan)]
    if fast_sampler:
        sections.append(_steps(plan))
    sections.append(_model(ir, plan, dist_expr, orders, fast_sampler))
    body = "\n\n\n".join(sections)
    return doc + "\n" + imports_for(body) + "\n\n" + body + "\n"
