"""Cached generation derived from the IR (Paine et al. 2016; Ramachandran et al. 2017).

Works for every raster-ordered, translation-equivariant graph (any spec built from convolutional
and elementwise ops, including ones a user writes). Each node keeps a full-size buffer. A max-plus pass
over the same taps the ops use gives, for each node and position, the last pixel its value reads;
the value is final once that pixel is generated, so after each pixel the sampler computes only the
values that just became final, from inputs that already are: O(layers) work per pixel instead of
a full forward pass. With several channels per pixel (R->G->B)
the nodes reading the current pixel are recomputed before each channel is drawn."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from arspec.analysis.deps import shift_array
from arspec.ir.graph import IRGraph
from arspec.runtime.layers import MaskedConv
from arspec.ops.shift import Shift

_CONV_OPS = {"masked_conv2d", "conv1d", "conv2d", "causal_conv1d", "conv1x1", "vertical_conv2d", "horizontal_conv2d"}
_POINTWISE = {"relu", "elu", "tanh", "sigmoid", "identity", "add", "multiply", "concat", "gated_tanh"}


def finality(ir: IRGraph) -> dict[str, np.ndarray]:
    """Per node and position: the last pixel (raster index) its value reads; -inf if it reads no
    data. A value is final once that pixel is generated, and each consumer's value is final no
    earlier than the inputs it reads (a max-plus propagation over the same taps the ops use)."""
    spatial = ir.ctx.spatial
    pixel = np.arange(int(np.prod(spatial)), dtype=float).reshape(spatial)
    none = np.full(spatial, -np.inf)
    out: dict[str, np.ndarray] = {}
    for node in ir:
        if node.kind == "data":
            out[node.name] = pixel
            continue
        if node.kind != "op":
            out[node.name] = none if not node.type.spatial or node.type.spatial == spatial else none
            continue
        ins = [out[i] if i in out and out[i].shape == spatial else none for i in node.inputs]
        if "geometry" in node.attrs:
            g = node.attrs["geometry"]
            used = np.argwhere(g.connectivity.any(axis=(0, 1)))
            f = none.copy()
            for tap in used:
                f = np.maximum(f, shift_array(ins[0], tuple(int(t) * d - b for t, d, b in zip(tap, g.dilation, g.pad_before)), -np.inf))
        elif node.spec.op == "shift":
            f = shift_array(ins[0], tuple(-b for b in node.spec.by), -np.inf)
        elif node.spec.op == "embedding":
            f = shift_array(ins[0], (0,) * (len(spatial) - 1) + (-node.spec.shift,), -np.inf)
        else:
            f = none.copy()
            for a in ins:
                f = np.maximum(f, a)
        for extra in node.conditions + ([node.residual] if node.residual else []):
            if extra in out and out[extra].shape == spatial:
                f = np.maximum(f, out[extra])
        out[node.name] = f
    return out


def supports(ir: IRGraph, spec) -> bool:
    """Whether cached generation can be derived for this model: raster order, and only ops that
    keep every position in place (convolutions, shifts, embeddings, elementwise ops)."""
    if ir.dense_output or any(o.type != "raster" for o in spec.orderings):
        return False
    for node in ir.op_nodes():
        if node.spec.op not in _CONV_OPS | _POINTWISE | {"shift", "embedding"}:
            return False
        if node.type.spatial != ir.ctx.spatial:
            return False
    return True


def sampler_for(ir: IRGraph, spec, net):
    """The cached sampler for a compiled graph, or None: the IR-derived one for convolutional
    raster models, or the op's own for a model that is one op on x with nothing around it (NADE)."""
    if supports(ir, spec):
        return IncrementalSampler(ir, net)
    nodes = ir.op_nodes()
    if len(nodes) == 1 and nodes[0].inputs == ["x"] and not nodes[0].conditions and not nodes[0].residual \
            and nodes[0].op.sampler is not None and all(len(np.unique(o)) == o.size for o in ir.ctx.orders):
        key = {name: key for name, key, *_ in net.plan}[nodes[0].name]
        return nodes[0].op.sampler(net.layers[key].core)
    return None


class IncrementalSampler:
    """Callable attached to an ARModel as `model.incremental` (see ARModel.sample).

    Buffers are (B, C, P + 1) over flat pixel positions; slot P is a permanent zero that stands for
    every read outside the image, so a convolution at one position is one gather and one matmul."""

    def __init__(self, ir: IRGraph, net) -> None:
        self.ir = ir
        self.net = net
        self.spatial = ir.ctx.spatial
        self.pixels = int(np.prod(self.spatial))
        self.keys = {name: key for name, key, *_ in net.plan}
        self.nodes = [n for n in ir if n.kind == "op"]
        final = finality(ir)
        self.schedule: list[list[tuple[int, int]]] = [[] for _ in range(self.pixels)]
        self.initial: list[tuple[int, int]] = []
        for i, node in enumerate(self.nodes):
            f = final[node.name].reshape(-1)
            for p in range(self.pixels):
                (self.initial if f[p] < 0 else self.schedule[int(f[p])]).append((i, p))
        self.gathers = [self._gather_indices(n) for n in self.nodes]

    def _gather_indices(self, node) -> torch.Tensor | None:
        """For a convolution: (P, taps) flat source positions of every tap (P = outside)."""
        if "geometry" in node.attrs:
            g = node.attrs["geometry"]
            kernel = g.connectivity.shape[2:]
            offsets = [tuple(t * d - b for t, d, b in zip(tap, g.dilation, g.pad_before)) for tap in np.ndindex(*kernel)]
        elif node.spec.op == "shift":
            offsets = [tuple(-b for b in node.spec.by)]
        elif node.spec.op == "embedding":
            offsets = [(0,) * (len(self.spatial) - 1) + (-node.spec.shift,)]
        else:
            return None
        coords = np.stack(np.unravel_index(np.arange(self.pixels), self.spatial), axis=1)
        idx = np.full((self.pixels, len(offsets)), self.pixels, dtype=np.int64)
        for k, off in enumerate(offsets):
            src = coords + np.array(off)
            ok = np.all((src >= 0) & (src < np.array(self.spatial)), axis=1)
            idx[ok, k] = np.ravel_multi_index(src[ok].T, self.spatial)
        return torch.as_tensor(idx)

    # -- per-call preparation: one closure per node -------------------------------------------------
    def _prepare(self, model, n: int, context: dict[str, Any]):
        dtype, device = model.dtype, model.device
        bufs: dict[str, torch.Tensor] = {}
        data = {"raw": torch.zeros((n, self.ir.ctx.groups, self.pixels + 1), dtype=torch.long, device=device),
                "enc": torch.zeros((n, self.ir.ctx.groups, self.pixels + 1), dtype=dtype, device=device)}
        context = model._check_context(context, n)
        cond_values: dict[str, torch.Tensor] = {}
        for name, c in context.items():
            if name in self.net.global_context:
                cond_values[name] = F.one_hot(c.long(), self.net.global_context[name]).to(dtype)
            else:
                up = self.net.layers[self.keys[name]](c.to(dtype))
                cond_values[name] = up.reshape(n, up.shape[1], -1)
        for node in self.nodes:
            bufs[node.name] = torch.zeros((n, node.type.channels, self.pixels + 1), dtype=dtype, device=device)

        def source(name: str, raw: bool = False) -> torch.Tensor:
            if name == "x":
                return data["raw"] if raw else data["enc"]
            return bufs[name]

        steps = []
        for node, gather in zip(self.nodes, self.gathers):
            module = self.net.layers[self.keys[node.name]]
            core = module.core
            out = bufs[node.name]
            # conditioning is fully known: precompute its contribution at every position
            bias = None
            for proj, c in zip(module.conditions, node.conditions):
                v = cond_values[c]
                contrib = proj(v).reshape(n, -1, 1) if v.dim() == 2 else torch.movedim(proj.proj(torch.movedim(v, 1, -1)), -1, 1)
                bias = contrib if bias is None else bias + contrib
            residual = bufs[node.residual] if node.residual and node.residual != "x" else (data["enc"] if node.residual == "x" else None)
            steps.append(self._step(node, core, module.act, gather, [source(i, node.op.reads_raw_data) for i in node.inputs],
                                    out, bias, residual))
        return bufs, data, steps

    def _step(self, node, core, act, gather, inputs, out, bias, residual):
        """A closure computing `node` at one flat position p and writing it into `out`."""
        op = node.spec.op
        if isinstance(core, MaskedConv):
            weight = (core.weight * core.mask).detach().reshape(core.weight.shape[0], -1).t()
            conv_bias = core.bias.detach() if core.bias is not None else None
            src = inputs[0]

            def core_at(p):
                window = src[:, :, gather[p]].reshape(src.shape[0], -1)
                return window @ weight + conv_bias if conv_bias is not None else window @ weight
        elif op == "shift":
            src = inputs[0]

            def core_at(p):
                return src[:, :, gather[p, 0]]
        elif op == "embedding":
            src = inputs[0]
            table = (core.weight * core.select.unsqueeze(1)).detach()       # (G, K, C)

            def core_at(p):
                q = gather[p, 0]
                if q == self.pixels:
                    return torch.zeros((src.shape[0], table.shape[-1]), dtype=table.dtype, device=table.device)
                return sum(table[g][src[:, g, q]] for g in range(table.shape[0]))
        else:
            def core_at(p):
                return core(*[t[:, :, p] for t in inputs])

        def step(p: int) -> None:
            y = core_at(p)
            if bias is not None:
                y = y + (bias[:, :, 0] if bias.shape[-1] == 1 else bias[:, :, p])
            y = act(y)
            if residual is not None:
                y = y + residual[:, :, p]
            out[:, :, p] = y
        return step

    # -- running the schedule ------------------------------------------------------------------------
    def _run(self, steps, pairs) -> None:
        for i, p in pairs:
            steps[i](p)

    @torch.no_grad()
    def teacher_forced(self, model, x: torch.Tensor, **context: torch.Tensor) -> torch.Tensor:
        """The distribution parameters computed through the cache with x known: (B, *event, P).
        Must equal model(x) — the check that cached generation agrees with the training graph."""
        n = x.shape[0]
        bufs, data, steps = self._prepare(model, n, context)
        raw = x.to(model.device).reshape(n, self.ir.ctx.groups, -1)
        data["raw"][:, :, :-1] = raw
        data["enc"][:, :, :-1] = model.distribution.encode(raw, model.dtype)
        self._run(steps, self.initial)
        for q in range(self.pixels):
            self._run(steps, self.schedule[q])
        out = bufs[self.ir.output][:, :, :-1].reshape(n, model.distribution.params_per_element, *model.event_shape)
        return torch.movedim(out, 1, -1)

    @torch.no_grad()
    def __call__(self, model, x: torch.Tensor, keep: torch.Tensor | None, generator, context: dict[str, Any]) -> torch.Tensor:
        n = x.shape[0]
        d = model.distribution
        groups = self.ir.ctx.groups
        bufs, data, steps = self._prepare(model, n, context)
        raw, enc = data["raw"], data["enc"]
        given = x.reshape(n, groups, -1)
        keep_flat = keep.reshape(groups, -1) if keep is not None else None
        if keep_flat is not None:       # known elements are visible from the start (clamped sampling)
            raw[:, :, :-1] = torch.where(keep_flat, given.long(), raw[:, :, :-1]) if d.discrete else raw[:, :, :-1]
            enc[:, :, :-1] = torch.where(keep_flat, d.encode(given, model.dtype), enc[:, :, :-1])
        out = bufs[self.ir.output]
        p_count = d.params_per_element
        result = torch.zeros_like(given)
        self._run(steps, self.initial)
        for q in range(self.pixels):
            for g in range(groups):
                if groups > 1:
                    self._run(steps, self.schedule[q])
                # the pixel as a one-position event: (n, C, 1, P) parameters, (n, C, 1) values so far
                pixel = out[:, :, q].reshape(n, p_count, groups).transpose(1, 2).unsqueeze(2)
                step = torch.zeros((groups, 1), dtype=torch.bool, device=pixel.device)
                step[g] = True
                u = model._uniforms(n, 1, generator)
                sample = d.sample_step(pixel, result[:, :, q:q + 1], step, u)[:, 0].to(given.dtype)
                if keep_flat is not None and bool(keep_flat[g, q]):
                    sample = given[:, g, q]
                result[:, g, q] = sample
                if d.discrete:
                    raw[:, g, q] = sample.long()
                enc[:, g, q] = d.encode(sample, model.dtype)
            self._run(steps, self.schedule[q])
        return result.reshape(n, *model.event_shape)
