"""The measured dependencies of a module, by perturbation: each input element changed in turn (a
flipped bit, another class, an added real), the output compared bit for bit in float64 with the
unperturbed output of the same batch position. A dependency either changes the output or does not:
no tolerance. This is the independent measurement the tracer is tested against (and the method
for modules whose values leave for Python, where the tracer cannot follow them); it costs one
forward item per element, so it is for small events."""
from __future__ import annotations

import copy

import torch

from arspec.verification.pattern import OutputPattern, to_elements


def redrawn(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A float64 copy in eval mode with every trainable parameter redrawn from a normal law (no
    dependency hides behind an exact zero); buffers, masks among them, are kept."""
    copy_ = copy.deepcopy(module).double().eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in copy_.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.5)
    return copy_


def perturbed(x: torch.Tensor, kind: str, gen: torch.Generator) -> torch.Tensor:
    """Every element of x changed: 1 - x for binary, another class for categorical:K, plus a
    normal draw for real values."""
    if kind == "binary":
        return 1 - x
    if kind.startswith("categorical:"):
        classes = int(kind.split(":", 1)[1])
        return (x + torch.randint(1, classes, x.shape, generator=gen)) % classes
    return x + torch.randn(x.shape, generator=gen, dtype=x.dtype)


def measured_dependencies(module: torch.nn.Module, x: torch.Tensor, kind: str, pattern: OutputPattern, sizes: dict[str, int],
                          axes: tuple[str, ...], seed: int = 0, chunk: int = 64) -> torch.Tensor:
    """(elements, elements) booleans: [e, j] when output element e of the item changes as input
    element j does (x: one item, (1, *event))."""
    model = redrawn(module, seed)
    data = x.double() if x.dtype.is_floating_point else x
    gen = torch.Generator().manual_seed(seed + 1)
    other = perturbed(data, kind, gen)
    n = data[0].numel()
    out = torch.zeros(n, n, dtype=torch.bool)
    flat, flat_other = data.reshape(1, -1), other.reshape(1, -1)

    def elements(value: torch.Tensor) -> torch.Tensor:
        e = to_elements(value, pattern, sizes, axes, lambda t, d: t)      # (B, *event[, K])
        return e.reshape(e.shape[0], n, -1)
    with torch.no_grad():
        for start in range(0, n, chunk):
            count = min(chunk, n - start)
            batch = flat.repeat(count, 1)
            reference = elements(_first(model(batch.reshape(count, *data.shape[1:]))))
            columns = torch.arange(start, start + count)
            batch[torch.arange(count), columns] = flat_other[0, columns]
            changed = (elements(_first(model(batch.reshape(count, *data.shape[1:])))) != reference).any(-1)
            out[:, start:start + count] = changed.t()
    return out


def _first(value):
    from torch.utils._pytree import tree_flatten
    return next(v for v in tree_flatten(value)[0] if isinstance(v, torch.Tensor))
