"""Dynamic confirmation: measure a compiled module's dependencies through the ARModel contract
(perturb one input element at a time, in eval mode and float64, compare parameters exactly) and
compare them with the static prediction at the same positions. Works for any backend: it only
uses the contract's members and the canonical parameter names (`net.<node>__<call>__<param>`).
This module needs torch; the static analysis never imports it."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch

from arspec.analysis.propagate import concrete_data, propagate, term_deps

FULL_LIMIT = 256          # events up to this size are probed at every element
SAMPLED_COLUMNS = 96
LONG_EVENT = 2048         # beyond this, fewer probes (each forward pass is expensive)


@dataclass
class DynamicResult:
    """Per mask: the probed columns, and where measured and predicted dependency sets differ."""

    columns: np.ndarray
    missing: list[tuple[int, int, int]] = field(default_factory=list)      # (mask, element, source) predicted, not measured
    unexpected: list[tuple[int, int, int]] = field(default_factory=list)   # measured, not predicted
    compared: int = 0
    mask_problem: str = ""          # order-agnostic: the module reads the mask where the spec does not, or not where it does
    cache_problem: str = ""         # cached generation computes other parameters than the training graph

    @property
    def agrees(self) -> bool:
        return not self.missing and not self.unexpected and not self.mask_problem and not self.cache_problem

    def record(self, mask: int, columns: np.ndarray, measured: np.ndarray, predicted: np.ndarray) -> None:
        """Add one comparison of (E, len(columns)) tables: the pairs where they differ."""
        self.compared += measured.size
        for e, j in np.argwhere(predicted & ~measured):
            self.missing.append((mask, int(e), int(columns[j])))
        for e, j in np.argwhere(measured & ~predicted):
            self.unexpected.append((mask, int(e), int(columns[j])))


def predicted_columns(spec, columns: np.ndarray, mask: int = 0, terms: bool = False) -> np.ndarray:
    """Static prediction restricted to source elements `columns`: (E, len(columns)), for each
    element's distribution parameters, or (`terms`) for its likelihood term."""
    ir = spec.ir
    deps = propagate(ir, concrete_data(ir, columns), mask)
    out = term_deps(ir, deps) if terms else deps[ir.output]
    return out.element_table(ir.ctx.groups, ir.ctx.params_per_element, ir.dense_output)


def _perturbed(x: torch.Tensor, columns: np.ndarray, classes: int | None, gen: torch.Generator) -> torch.Tensor:
    """One copy of x per column, that element changed (to another class, or by 1 to 2)."""
    flat = x.reshape(1, -1).repeat(len(columns), 1)
    rows = torch.arange(len(columns))
    cols = torch.as_tensor(columns)
    if classes is not None:
        bump = torch.randint(1, classes, (len(columns),), generator=gen)
        flat[rows, cols] = (flat[rows, cols] + bump) % classes
    else:
        flat[rows, cols] = flat[rows, cols] + 1.0 + torch.rand(len(columns), generator=gen, dtype=flat.dtype)
    return flat.reshape(len(columns), *x.shape[1:])


@torch.no_grad()
def measure_columns(model, columns: np.ndarray, trials: int = 3, seed: int = 0, chunk: int | None = None,
                    terms: bool = False, classes: int | None = None, observed: torch.Tensor | None = None) -> np.ndarray:
    """Measured dependencies on `columns`: (E, len(columns)), union over `trials` random inputs, of
    the distribution parameters or (`terms`) of the log-likelihood terms (which always read their
    own element). An order-agnostic model is run with the mask `observed` (event-shaped)."""
    if observed is not None:
        def quantity(x, **c):
            return model(x, observed=observed.expand(len(x), *observed.shape), **c)
    else:
        quantity = (lambda x, **c: model.log_prob_elements(x, **c).unsqueeze(-1)) if terms else model
    gen = torch.Generator().manual_seed(seed)
    if classes is None and model.distribution.discrete:
        classes = model.distribution.classes
    n = int(np.prod(model.event_shape))
    index = user_index(model)
    out = np.zeros((n, len(columns)), dtype=bool)
    rows = getattr(model, "rows_within", None)
    chunk = chunk or max(1, min(64, 100_000 // n, rows() // 2 if rows is not None else 64))   # perturbed and reference rows
    for _ in range(trials):
        x, context = model.example_inputs(1, gen)
        x = x.cpu()
        bases: dict[int, torch.Tensor] = {}
        for start in range(0, len(columns), chunk):
            cols = columns[start:start + chunk]
            # the reference is computed in a batch of the same shape, each row at the same
            # position as its perturbed twin, so both go through identical kernels
            ctx = {k: v.expand(len(cols), *v.shape[1:]) for k, v in context.items()}
            if len(cols) not in bases:
                bases[len(cols)] = quantity(x.expand(len(cols), *x.shape[1:]).clone(), **ctx).reshape(len(cols), n, -1)[:, index]
            base = bases[len(cols)]
            params = quantity(_perturbed(x, index[cols], classes, gen), **ctx).reshape(len(cols), n, -1)[:, index]
            changed = (params != base).any(dim=-1)             # (len(cols), E)
            out[:, start:start + len(cols)] |= changed.T.cpu().numpy()
    return out


def user_index(model) -> np.ndarray:
    """Per element in the analysis' flat layout (internal, channels first), its flat index in the
    model's event layout (they differ for videos, [T, C, H, W] against (C, T, H, W))."""
    n = int(np.prod(model.event_shape))
    return np.asarray(model.user_index()) if hasattr(model, "user_index") else np.arange(n)


def in_user_layout(model, flat: np.ndarray) -> np.ndarray:
    """A flat array over the analysis' elements, rearranged into the model's event shape."""
    out = np.empty_like(flat)
    out[user_index(model)] = flat
    return out.reshape(model.event_shape)


def generic_parameters(model, seed: int, ir=None) -> None:
    """Redraw every parameter (biases included) at random. Masks are applied in forward, so the
    architecture is unchanged, but no dependency can hide behind an exact zero (a zero bias makes
    tanh(0) * gate vanish) or a dead ReLU; the static analysis predicts dependencies for generic
    weights. A
    primitive may ask for probe values instead (recurrences whose signal must survive many steps);
    `ir` (the spec's IR) says which parameter belongs to which primitive."""
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    table = ir.parameter_table() if ir is not None else {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                # positive biases keep ReLU paths open: a dead unit hides a real dependency
                p.copy_(0.5 + 0.5 * torch.rand(p.shape, generator=gen, dtype=p.dtype))
            else:
                fan_in = int(np.prod(p.shape[1:])) if p.dim() > 1 else 4
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) / max(1.0, fan_in) ** 0.5)
            entry = table.get(name.removeprefix("net."))
            probe = entry.call.primitive.probe(entry.name, rng) if entry is not None else None
            if probe is not None:
                p.copy_(torch.as_tensor(probe, dtype=p.dtype).reshape(p.shape))


def dynamic_check(spec, model, trials: int = 3, seed: int = 0, columns: np.ndarray | None = None,
                  generic: bool = True, cache: bool = False) -> DynamicResult:
    """Compare measured and predicted dependencies for every mask set of `model` (a copy is probed;
    with `generic` its parameters are redrawn at random first); with `cache`, also the parameters
    computed through the model's cached generation with those of the training graph."""
    n = spec.ir.ctx.elements
    if columns is None:
        if n <= FULL_LIMIT:
            columns = np.arange(n)
        else:
            rng = np.random.default_rng(seed)
            corners = np.array([0, n - 1, n // 2])
            count = SAMPLED_COLUMNS if n <= LONG_EVENT else SAMPLED_COLUMNS // 3
            columns = np.unique(np.concatenate([corners, rng.choice(n, count, replace=False)]))
            trials = trials if n <= LONG_EVENT else min(trials, 2)
    probe = copy.deepcopy(model).to(device="cpu", dtype=torch.float64).eval()
    if generic:
        generic_parameters(probe, seed, spec.ir)
    dist = spec.ir.distribution
    classes = dist.classes if dist.discrete else None
    result = DynamicResult(columns)
    if spec.ir.ctx.agnostic:
        return _agnostic_check(spec, probe, columns, trials, seed, classes, result)
    for m in range(probe.num_masks):
        probe.select_mask(m)
        predicted = predicted_columns(spec, columns, m)
        measured = _measure(probe, columns, predicted, trials, seed + m, classes, terms=False)
        result.record(m, columns, measured, predicted)
        if dist.couples_channels:
            # the coupling lives in the likelihood: compare the terms too (their own element aside)
            own = np.arange(n)[:, None] == columns[None, :]
            predicted = predicted_columns(spec, columns, m, terms=True) & ~own
            measured = _measure(probe, columns, predicted | own, trials, seed + m, classes, terms=True) & ~own
            result.record(m, columns, measured, predicted)
    if cache:
        result.cache_problem = cache_disagreement(probe, seed)
    return result


def cache_disagreement(model, seed: int = 0, tolerance: float = 1e-6) -> str:
    """Teacher-forced parameters through the model's cache (a backend that offers it) against the
    training graph, on random data: a message where they differ, "" where they agree or there is
    no cache to compare."""
    forced = getattr(getattr(model, "incremental", None), "teacher_forced", None)
    if forced is None:
        return ""
    x, context = model.example_inputs(2, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        through_cache, graph = forced(model, x, **context), model(x, **context)
    error = float((through_cache - graph).abs().max())
    scale = max(1.0, float(graph.abs().max()))
    if error > tolerance * scale:
        return f"cached generation disagrees with the training graph (largest difference {error:.3g} in the parameters)"
    return ""


RETRIALS = 12
AGNOSTIC_MASKS = 4


def random_observed(n: int, rng: np.random.Generator) -> np.ndarray:
    """A mask of observed elements as order-agnostic training draws it: a random ordering and a
    number d in 0..n-1 of elements observed, the first d of that ordering."""
    rank = rng.permutation(n)
    return rank < rng.integers(0, n)


def _agnostic_check(spec, probe, columns: np.ndarray, trials: int, seed: int, classes: int | None,
                    result: DynamicResult) -> DynamicResult:
    """Order-agnostic models, per random mask m: the measured dependencies equal the prediction for
    that mask, so perturbing x where m = 0 changes no output, and every observed element the graph
    connects is read. The masks are recorded as `mask` 0, 1, ... in the result."""
    from arspec.primitives.observe import given_elements
    rng = np.random.default_rng(seed)
    n = spec.ir.ctx.elements
    masks = [np.zeros(n, dtype=bool), np.ones(n, dtype=bool)]
    masks[1][rng.integers(n)] = False           # all but one observed
    masks += [random_observed(n, rng) for _ in range(AGNOSTIC_MASKS)]
    for k, given in enumerate(masks):
        with given_elements(given):
            predicted = predicted_columns(spec, columns)
        observed = torch.as_tensor(in_user_layout(probe, given), dtype=probe.dtype)
        measured = measure_columns(probe, columns, trials, seed + k, classes=classes, observed=observed)
        unseen = np.nonzero((predicted & ~measured).any(axis=0))[0]
        if len(unseen):
            measured[:, unseen] |= measure_columns(probe, columns[unseen], RETRIALS, seed + 1000 + k, classes=classes, observed=observed)
        result.record(k, columns, measured, predicted)
    result.mask_problem = _mask_feed_problem(spec, probe)
    return result


@torch.no_grad()
def _mask_feed_problem(spec, probe) -> str:
    """Whether the module reads the mask beyond the gates exactly when the spec feeds it: with x
    encoded as zeros the gates give 0 under any mask, so only a fed mask can change the output.
    (Checked where the data's zero encodes as 0: binary and real-valued data.)"""
    from arspec.analysis.checks import observe_gates
    x = torch.zeros((1, *probe.event_shape), dtype=torch.long if probe.distribution.discrete else probe.dtype)
    if probe.distribution.encode(x, probe.dtype).abs().sum() != 0:
        return ""
    empty = torch.zeros((1, *probe.event_shape), dtype=probe.dtype)
    reads = bool((probe(x, observed=empty) != probe(x, observed=torch.ones_like(empty))).any())
    fed = bool(observe_gates(spec.ir)[1])
    if reads == fed:
        return ""
    return ("the module reads the mask `observed` although the spec feeds it only to the gates" if reads
            else "the spec feeds the mask `observed` to the network, but the module's output does not change with it")


def _measure(probe, columns: np.ndarray, predicted: np.ndarray, trials: int, seed: int, classes: int | None, terms: bool) -> np.ndarray:
    """Measured dependencies; columns where a predicted one did not show are probed again with more
    random inputs, since a dependency can vanish for one input (a ReLU path that is dead for it)."""
    measured = measure_columns(probe, columns, trials, seed, classes=classes, terms=terms)
    unseen = np.nonzero((predicted & ~measured).any(axis=0))[0]
    if len(unseen):
        again = measure_columns(probe, columns[unseen], RETRIALS, seed + 1000, classes=classes, terms=terms)
        measured[:, unseen] |= again
    return measured
