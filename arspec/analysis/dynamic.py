"""Dynamic confirmation: measure a compiled module's dependencies through the ARModel contract
(perturb one input element at a time, in eval mode and float64, compare parameters exactly) and
compare them with the static prediction at the same positions."""
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

    @property
    def agrees(self) -> bool:
        return not self.missing and not self.unexpected

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
                    terms: bool = False) -> np.ndarray:
    """Measured dependencies on `columns`: (E, len(columns)), union over `trials` random inputs, of
    the distribution parameters or (`terms`) of the log-likelihood terms (which always read their
    own element)."""
    quantity = (lambda x, **c: model.log_prob_elements(x, **c).unsqueeze(-1)) if terms else model
    gen = torch.Generator().manual_seed(seed)
    d = model.distribution
    classes = d.classes if d.discrete else None
    n = int(np.prod(model.event_shape))
    out = np.zeros((n, len(columns)), dtype=bool)
    chunk = chunk or max(1, min(64, 100_000 // n))
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
                bases[len(cols)] = quantity(x.expand(len(cols), *x.shape[1:]).clone(), **ctx).reshape(len(cols), n, -1)
            base = bases[len(cols)]
            params = quantity(_perturbed(x, cols, classes, gen), **ctx).reshape(len(cols), n, -1)
            changed = (params != base).any(dim=-1)             # (len(cols), E)
            out[:, start:start + len(cols)] |= changed.T.cpu().numpy()
    return out


def generic_parameters(model, seed: int) -> None:
    """Redraw every parameter (biases included) at random. Masks are applied in forward, so the
    architecture is unchanged, but no dependency can hide behind an exact zero (a zero bias makes
    tanh(0) * gate vanish); the static analysis predicts dependencies for generic weights."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            fan_in = int(np.prod(p.shape[1:])) if p.dim() > 1 else 4
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) / max(1.0, fan_in) ** 0.5)
        for m in model.modules():
            if hasattr(m, "probe_parameters"):     # e.g. recurrences whose signal must survive many steps
                m.probe_parameters(gen)


def dynamic_check(spec, model, trials: int = 3, seed: int = 0, columns: np.ndarray | None = None,
                  generic: bool = True) -> DynamicResult:
    """Compare measured and predicted dependencies for every mask set of `model` (a copy is probed;
    with `generic` its parameters are redrawn at random first)."""
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
        generic_parameters(probe, seed)
    result = DynamicResult(columns)
    for m in range(probe.num_masks):
        probe.select_mask(m)
        measured = measure_columns(probe, columns, trials, seed + m)
        result.record(m, columns, measured, predicted_columns(spec, columns, m))
        if probe.distribution.couples_channels:
            # the coupling lives in the likelihood: compare the terms too (their own element aside)
            own = np.arange(n)[:, None] == columns[None, :]
            measured = measure_columns(probe, columns, trials, seed + m, terms=True) & ~own
            result.record(m, columns, measured, predicted_columns(spec, columns, m, terms=True) & ~own)
    return result
