"""The dependency rule of each ATen operation, written once for both semirings: what each output
element reads of the inputs, and which output elements are forced to 0 or -inf.

Families: views and rearrangements (the same function applied to the shadow), pointwise
operations (the union of the arguments, minus those multiplied by a forced zero or added to a
forced -inf), reductions, contractions (matrix products, convolutions, attention: the union over
the terms a forced zero does not remove), indexing (the indices' own dependencies included),
normalisations and recurrent layers. An operation without a rule reads everything (reported)."""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from arspec.verification.replay import MASK_VALUE, Replay, Shadow, UnknownOp
from arspec.verification.semiring import MaxSemiring
from arspec.verification.tape import Ref

Rule = Callable[[Replay, Any], Any]
RULES: dict[str, Rule] = {}


def rule(*names: str) -> Callable[[Rule], Rule]:
    def register(f: Rule) -> Rule:
        for name in names:
            RULES[name] = f
        return f
    return register


def rule_for(func: Any) -> Rule | None:
    """The rule of an operation: by its name (an in-place variant as its functional one), else by
    its tags (pointwise) or nature (a view); None when there is none."""
    name = func._schema.name.split("::")[-1]
    for candidate in (f"{name}.{func._overloadname}", name, name.rstrip("_")):
        if candidate in RULES:
            return RULES[candidate]
    if torch.Tag.pointwise in func.tags:
        return pointwise
    if func.is_view:
        return view
    return None


# -- helpers ----------------------------------------------------------------------------------------

def argmap(entry: Any) -> dict[str, Any]:
    """The operation's arguments by their schema names (positional and keyword)."""
    names = [a.name for a in entry.func._schema.arguments]
    out = {name: value for name, value in zip(names, entry.args)}
    out.update(entry.kwargs)
    for a in entry.func._schema.arguments:
        if a.name not in out and a.has_default_value():
            out[a.name] = a.default_value
    return out


def out_shape(R: Replay, entry: Any, index: int = 0) -> tuple[int, ...]:
    outputs = entry.outputs if isinstance(entry.outputs, (list, tuple)) else [entry.outputs]
    return R.shape(outputs[index])


def empty(R: Replay, shadow: Shadow) -> bool:
    """Whether a shadow reads nothing at all (its part of a contraction can be skipped)."""
    return bool((shadow.dep == R.sr.none).all())


def as_float(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float64) if t.dtype == torch.bool else t


def apply_parts(shadow: Shadow, f: Callable[[torch.Tensor], Any]) -> Any:
    """`f` applied to each part (flags through float64 where an operation takes no booleans)."""
    def flag(t: torch.Tensor) -> Any:
        try:
            return f(t)
        except (RuntimeError, NotImplementedError):
            result = f(as_float(t))
            return [r > 0.5 for r in result] if isinstance(result, (list, tuple)) else result > 0.5
    dep, zero, ninf = f(shadow.dep), flag(shadow.zero), flag(shadow.ninf)
    if isinstance(dep, (list, tuple)):
        return [Shadow(d, z, n) for d, z, n in zip(dep, zero, ninf)]
    return Shadow(dep, zero, ninf)


def dims_of(a: dict[str, Any], rank: int) -> tuple[int, ...]:
    dim = a.get("dim", a.get("dims"))
    if dim is None or (isinstance(dim, (list, tuple)) and len(dim) == 0):
        return tuple(range(rank))
    dims = dim if isinstance(dim, (list, tuple)) else [dim]
    return tuple(sorted(d % max(rank, 1) for d in dims))


def broadcast_along(t: torch.Tensor, dim: int, rank: int) -> torch.Tensor:
    """A 1-D tensor laid along axis `dim` of a tensor of rank `rank`."""
    shape = [1] * rank
    shape[dim] = t.numel()
    return t.reshape(shape)


# -- views, copies, rearrangements ----------------------------------------------------------------

def view(R: Replay, entry: Any) -> Any:
    """A view: the same function on the shadow of its base (so writes through it reach the base)."""
    source = R.get(entry.args[0])
    rest, kwargs = entry.args[1:], entry.kwargs
    name = entry.func._schema.name.split("::")[-1]
    if any(isinstance(x, torch.dtype) for x in (*rest, *kwargs.values())):
        raise UnknownOp(name)                               # a view as another dtype reinterprets bits

    def f(t: torch.Tensor) -> Any:
        try:
            return entry.func(t, *rest, **kwargs)
        except RuntimeError:
            if name in ("view", "_unsafe_view"):
                return t.reshape(rest[0])
            raise
    return apply_parts(source, f)


@rule("clone", "_to_copy", "lift_fresh_copy", "lift_fresh", "detach_copy", "alias_copy", "contiguous", "resolve_conj", "resolve_neg",
      "positive")
def identity(R: Replay, entry: Any) -> Shadow:
    source = R.get(entry.args[0])
    return Shadow(source.dep.clone(), source.zero.clone(), source.ninf.clone())


@rule("_unsafe_view", "reshape", "view_copy", "_reshape_copy")
def reshaped(R: Replay, entry: Any) -> Shadow:
    """A reshape that copies: the shadow reshaped the same way."""
    shape = out_shape(R, entry)
    return R.get(entry.args[0]).map(lambda t: t.reshape(shape).clone())


@rule("copy", "_copy_from", "copy_")
def copy(R: Replay, entry: Any) -> Shadow:
    target, source = R.get(entry.args[0]), R.get(entry.args[1])
    return source.expand(target.dep.shape).map(torch.clone)


@rule("fill", "zero", "fill_", "zero_", "new_zeros", "new_ones", "new_full", "new_empty", "new_empty_strided", "zeros_like",
      "ones_like", "full_like", "empty_like", "scalar_tensor")
def filled(R: Replay, entry: Any) -> Shadow:
    """A tensor of given values, whatever its argument holds."""
    a = argmap(entry)
    shape = out_shape(R, entry)
    name = entry.func._schema.name.split("::")[-1].rstrip("_")
    value = {"zero": 0.0, "zeros_like": 0.0, "new_zeros": 0.0, "ones_like": 1.0, "new_ones": 1.0}.get(name, a.get("value", a.get("fill_value")))
    if isinstance(value, Ref):
        v = R.value(value)
        if v is None:
            return Shadow(R.get(value).dep.expand(shape).clone(), *_false(shape))
        value = float(v)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return R.none(shape)
    v = float(value)
    return R.none(shape, torch.full(shape, v == 0), torch.full(shape, v <= MASK_VALUE))


@rule("cat")
def cat(R: Replay, entry: Any) -> Shadow:
    a = argmap(entry)
    parts = [R.get(t) for t in a["tensors"] if not (isinstance(t, Ref) and R.shape(t) == (0,))]
    dim = a.get("dim", 0)
    return Shadow(torch.cat([p.dep for p in parts], dim), torch.cat([p.zero for p in parts], dim), torch.cat([p.ninf for p in parts], dim))


@rule("stack")
def stack(R: Replay, entry: Any) -> Shadow:
    a = argmap(entry)
    parts = [R.get(t) for t in a["tensors"]]
    dim = a.get("dim", 0)
    return Shadow(torch.stack([p.dep for p in parts], dim), torch.stack([p.zero for p in parts], dim), torch.stack([p.ninf for p in parts], dim))


@rule("constant_pad_nd")
def constant_pad(R: Replay, entry: Any) -> Shadow:
    a = argmap(entry)
    source, pad, value = R.get(a["self"]), list(a["pad"]), float(a.get("value", 0) or 0)
    return Shadow(F.pad(source.dep, pad, value=R.sr.none), F.pad(source.zero, pad, value=value == 0),
                  F.pad(source.ninf, pad, value=value <= MASK_VALUE))


@rule("flip", "roll", "repeat", "repeat_interleave.self_int", "pixel_shuffle", "pixel_unshuffle", "channel_shuffle",
      "reflection_pad1d", "reflection_pad2d", "reflection_pad3d", "replication_pad1d", "replication_pad2d", "replication_pad3d",
      "_pad_circular", "upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d", "_upsample_nearest_exact1d",
      "_upsample_nearest_exact2d", "_upsample_nearest_exact3d", "tile", "movedim", "rot90")
def rearrange(R: Replay, entry: Any) -> Any:
    """Operations that move or copy elements: the same function on the shadow."""
    return apply_parts(R.get(entry.args[0]), lambda t: entry.func(t, *entry.args[1:], **entry.kwargs))


@rule("tril", "triu")
def triangle(R: Replay, entry: Any) -> Shadow:
    a = argmap(entry)
    source = R.get(a["self"])
    keep = entry.func(torch.ones(source.dep.shape[-2:], dtype=torch.bool), a.get("diagonal", 0))
    return Shadow(torch.where(keep, source.dep, torch.full((), R.sr.none, dtype=torch.float64)),
                  torch.where(keep, source.zero, True), torch.where(keep, source.ninf, False))


# -- pointwise -----------------------------------------------------------------------------------

MUL_LIKE = ("mul", "logical_and", "bitwise_and", "__and__")
ADD_LIKE = ("add", "sub", "rsub")
KEEPS_ZERO = ("relu", "tanh", "sin", "sinh", "asin", "atan", "gelu", "silu", "neg", "abs", "sqrt", "erf", "hardtanh", "leaky_relu",
              "elu", "selu", "celu", "mish", "hardswish", "sign", "square", "expm1", "log1p", "floor", "ceil", "round", "trunc",
              "clamp", "clamp_min", "clamp_max", "native_dropout", "threshold", "_to_copy", "nan_to_num")


def pointwise(R: Replay, entry: Any) -> Any:
    """An elementwise operation: each output element reads the same element of every argument
    (broadcast), except where another argument forces the result (a product with a forced zero,
    a sum with a forced -inf, a selection by a constant condition)."""
    name = entry.func._schema.name.split("::")[-1].rstrip("_")
    outputs = entry.outputs if isinstance(entry.outputs, (list, tuple)) else [entry.outputs]
    shape = R.shape(outputs[0])
    a = argmap(entry)
    if name == "where" and R.is_const(a.get("condition")):
        return _select(R, R.value(a["condition"]).bool(), a["self"], a["other"], shape)
    if name == "masked_fill" and R.is_const(a.get("mask")):
        value = a["value"]
        filled_with = R.get(value).expand(shape) if isinstance(value, Ref) else _scalar(R, float(value), shape)
        return _select(R, R.value(a["mask"]).bool(), filled_with, a["self"], shape)
    tensors = [x for x in (*entry.args, *entry.kwargs.values()) if isinstance(x, Ref)]
    scalars = [x for x in entry.args[1:] if isinstance(x, (int, float)) and not isinstance(x, bool)]
    parts = [R.get(t).expand(shape) for t in tensors]
    killed = [torch.zeros(shape, dtype=torch.bool) for _ in parts]
    zero = torch.zeros(shape, dtype=torch.bool)
    ninf = torch.zeros(shape, dtype=torch.bool)
    if name in MUL_LIKE:
        for i in range(len(parts)):
            for j, other in enumerate(parts):
                if j != i:
                    killed[i] = killed[i] | other.zero
        zero = _any([p.zero for p in parts], shape) | any(s == 0 for s in scalars)
        if any(s == 0 for s in scalars):
            killed = [torch.ones(shape, dtype=torch.bool) for _ in parts]
    elif name in ADD_LIKE:
        alpha = a.get("alpha", 1)
        if len(parts) == 2 and isinstance(alpha, (int, float)) and alpha == 0:
            killed[1] = torch.ones(shape, dtype=torch.bool)
        for i in range(len(parts)):
            for j, other in enumerate(parts):
                if j != i:
                    killed[i] = killed[i] | other.ninf
        ninf = parts[0].ninf | (parts[1].ninf if len(parts) > 1 and name == "add" else False) if parts else ninf
        zero = _all([p.zero for p in parts], shape) & all(s == 0 for s in scalars) if parts else zero
    elif name == "div" and parts:
        zero = parts[0].zero.clone()
        killed = [zero.clone() for _ in parts]
        ninf = parts[0].ninf & all(isinstance(s, (int, float)) and s > 0 for s in scalars) & (len(parts) == 1)
    elif name in ("exp", "softplus", "sigmoid") and parts:
        zero = parts[0].ninf.clone() if name == "exp" else zero
    elif name in KEEPS_ZERO and parts:
        zero = parts[0].zero | (parts[0].ninf if name == "relu" else False)
    dep = torch.full(shape, R.sr.none, dtype=torch.float64)
    for part, kill in zip(parts, killed):
        if R.sr is MaxSemiring:
            dep = torch.maximum(dep, torch.where(kill, R.sr.none, part.dep))
        else:
            dep = dep + part.dep * (~kill)
    result = Shadow(dep, zero, ninf)
    return [result if i == 0 else Shadow(dep.clone(), zero.clone(), ninf.clone()) for i in range(len(outputs))] \
        if isinstance(entry.outputs, (list, tuple)) else result


def _scalar(R: Replay, value: float, shape: tuple[int, ...]) -> Shadow:
    return R.none(shape, torch.full(shape, value == 0), torch.full(shape, value <= MASK_VALUE))


def _select(R: Replay, condition: torch.Tensor, a: Any, b: Any, shape: tuple[int, ...]) -> Shadow:
    """where(condition, a, b) with a constant condition: each element reads the branch it takes."""
    def part(x: Any) -> Shadow:
        if isinstance(x, Shadow):
            return x.expand(shape)
        if isinstance(x, Ref):
            return R.get(x).expand(shape)
        return _scalar(R, float(x), shape)
    pa, pb = part(a), part(b)
    c = condition.expand(shape)
    return Shadow(torch.where(c, pa.dep, pb.dep), torch.where(c, pa.zero, pb.zero), torch.where(c, pa.ninf, pb.ninf))


def _any(flags: list[torch.Tensor], shape: tuple[int, ...]) -> torch.Tensor:
    out = torch.zeros(shape, dtype=torch.bool)
    for f in flags:
        out = out | f
    return out


def _all(flags: list[torch.Tensor], shape: tuple[int, ...]) -> torch.Tensor:
    out = torch.ones(shape, dtype=torch.bool)
    for f in flags:
        out = out & f
    return out


@rule("native_dropout")
def dropout(R: Replay, entry: Any) -> Any:
    """Dropout in training: the kept elements read their input (the mask is random, not forced)."""
    source = R.get(entry.args[0])
    shape = out_shape(R, entry)
    return [Shadow(source.dep.clone(), source.zero.clone(), torch.zeros(shape, dtype=torch.bool)), R.none(out_shape(R, entry, 1))]


@rule("bernoulli.p", "bernoulli_.float", "rand_like", "randn_like", "randint_like", "normal_", "uniform_", "exponential_", "random_")
def random_values(R: Replay, entry: Any) -> Shadow:
    return R.none(out_shape(R, entry))


# -- reductions ----------------------------------------------------------------------------------

@rule("sum", "mean", "amax", "amin", "max", "min", "prod", "logsumexp", "var", "std", "var_mean", "std_mean", "norm",
      "linalg_vector_norm", "any", "all", "argmax", "argmin", "count_nonzero", "nansum", "nanmean", "median", "nanmedian", "mode",
      "aminmax")
def reduction(R: Replay, entry: Any) -> Any:
    """Each output element reads every element it reduces."""
    a = argmap(entry)
    source = R.get(a["self"])
    rank = source.dep.dim()
    if entry.func._schema.name.endswith("max") and "other" in a:      # maximum of two tensors
        return pointwise(R, entry)
    dims = dims_of(a, rank)
    keep = bool(a.get("keepdim", False))
    dep = R.sr.reduce(source.dep, dims, keep)
    zero = source.zero.all(dim=dims, keepdim=keep) if rank else source.zero
    outputs = entry.outputs if isinstance(entry.outputs, (list, tuple)) else [entry.outputs]
    shadows = [Shadow(dep.reshape(R.shape(o)).clone(), zero.reshape(R.shape(o)).clone(), torch.zeros(R.shape(o), dtype=torch.bool))
               for o in outputs]
    return shadows if isinstance(entry.outputs, (list, tuple)) else shadows[0]


@rule("_softmax", "softmax", "_log_softmax", "log_softmax", "_safe_softmax")
def softmax(R: Replay, entry: Any) -> Shadow:
    """Every output element reads the whole slice along `dim`; an element whose input is forced to
    -inf comes out forced to 0 (softmax) or -inf (log-softmax)."""
    a = argmap(entry)
    source = R.get(a["self"])
    dim = a["dim"] % max(1, source.dep.dim())
    dep = R.sr.reduce(source.dep, (dim,), True).expand(source.dep.shape).clone()
    masked = source.ninf & ~source.ninf.all(dim=dim, keepdim=True)
    if "log" in entry.func._schema.name:
        return Shadow(dep, torch.zeros_like(masked), masked)
    return Shadow(dep, masked, torch.zeros_like(masked))


@rule("cumsum", "cumprod", "cummax", "cummin", "logcumsumexp")
def prefix(R: Replay, entry: Any) -> Any:
    a = argmap(entry)
    source = R.get(a["self"])
    dep = R.sr.prefix(source.dep, a["dim"] % source.dep.dim())
    none = R.none(tuple(dep.shape))
    out = Shadow(dep, none.zero, none.ninf)
    return [out, Shadow(dep.clone(), none.zero.clone(), none.ninf.clone())] if isinstance(entry.outputs, (list, tuple)) else out


@rule("sort", "topk", "argsort", "kthvalue", "msort")
def ordering_reduction(R: Replay, entry: Any) -> Any:
    """A sort or a top-k along `dim`: every result reads the whole slice."""
    a = argmap(entry)
    source = R.get(a["self"])
    dim = a.get("dim", -1) % max(1, source.dep.dim())
    whole = R.sr.reduce(source.dep, (dim,), True)
    outputs = entry.outputs if isinstance(entry.outputs, (list, tuple)) else [entry.outputs]
    shadows = [Shadow(whole.expand(R.shape(o)).clone(), *_false(R.shape(o))) for o in outputs]
    return shadows if isinstance(entry.outputs, (list, tuple)) else shadows[0]


def per_output(R: Replay, entry: Any, make: Callable[[int, tuple[int, ...]], Shadow]) -> Any:
    """`make(index, shape)` for each tensor output of an operation (others kept as they are), in
    the structure of its outputs."""
    outputs = entry.outputs if isinstance(entry.outputs, (list, tuple)) else [entry.outputs]
    shadows = [make(i, R.shape(o)) if isinstance(o, Ref) else o for i, o in enumerate(outputs)]
    return shadows if isinstance(entry.outputs, (list, tuple)) else shadows[0]


def _false(shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros(shape, dtype=torch.bool), torch.zeros(shape, dtype=torch.bool)


# -- contractions ----------------------------------------------------------------------------------

def _side(R: Replay, values: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """values (..., I, K), allowed (..., J, K) -> (..., I, J): per (i, j) the semiring sum of
    values[i, k] over the k allowed for j (batched masks that differ are taken one by one)."""
    if allowed.dim() > 2:
        lead = torch.broadcast_shapes(values.shape[:-2], allowed.shape[:-2])
        values = values.expand(*lead, *values.shape[-2:])
        allowed = allowed.expand(*lead, *allowed.shape[-2:])
        flat_allowed = allowed.reshape(-1, *allowed.shape[-2:])
        if bool((flat_allowed == flat_allowed[:1]).all()):
            return R.sr.masked_reduce(values, flat_allowed[0])
        flat_values = values.reshape(-1, *values.shape[-2:])
        out = [R.sr.masked_reduce(v, m) for v, m in zip(flat_values, flat_allowed)]
        return torch.stack(out).reshape(*lead, values.shape[-2], allowed.shape[-2])
    return R.sr.masked_reduce(values, allowed)


def contract(R: Replay, a: Shadow, b: Shadow) -> Shadow:
    """The shadow of a @ b for a (..., I, K) and b (..., K, J): a term a[i, k] b[k, j] carries
    a's dependency unless b[k, j] is forced to zero, and b's unless a[i, k] is."""
    lead = torch.broadcast_shapes(a.dep.shape[:-2], b.dep.shape[:-2])
    shape = (*lead, a.dep.shape[-2], b.dep.shape[-1])
    dep = torch.full(shape, R.sr.none, dtype=torch.float64)
    if not empty(R, a):
        dep = R.sr.plus(dep, _side(R, a.dep, ~b.zero.transpose(-1, -2)).expand(shape))
    if not empty(R, b):
        dep = R.sr.plus(dep, _side(R, b.dep.transpose(-1, -2), ~a.zero).transpose(-1, -2).expand(shape))
    live = ((~a.zero).to(torch.float32) @ (~b.zero).to(torch.float32)) > 0
    return Shadow(dep, (~live).expand(shape).clone(), torch.zeros(shape, dtype=torch.bool))


@rule("mm", "bmm", "matmul")
def matmul(R: Replay, entry: Any) -> Shadow:
    return contract(R, R.get(entry.args[0]), R.get(entry.args[1]))


@rule("addmm", "baddbmm", "addbmm")
def addmm(R: Replay, entry: Any) -> Shadow:
    a = argmap(entry)
    product = contract(R, R.get(a["mat1"] if "mat1" in a else a["batch1"]), R.get(a["mat2"] if "mat2" in a else a["batch2"]))
    if entry.func._schema.name.endswith("addbmm"):
        product = Shadow(R.sr.reduce(product.dep, (0,)), product.zero.all(0), product.ninf.all(0))
    shape = out_shape(R, entry)
    if a.get("beta", 1) == 0:
        return product.expand(shape)
    bias = R.get(a["self"]).expand(shape)
    return Shadow(R.sr.plus(product.dep.expand(shape), bias.dep), product.zero.expand(shape) & bias.zero, torch.zeros(shape, dtype=torch.bool))


@rule("mv", "addmv", "dot", "vdot")
def matrix_vector(R: Replay, entry: Any) -> Shadow:
    a = argmap(entry)
    name = entry.func._schema.name.split("::")[-1]
    if name in ("dot", "vdot"):
        left, right = R.get(a["self"]).map(lambda t: t[None]), R.get(a["tensor"]).map(lambda t: t[:, None])
    else:
        left, right = R.get(a["mat"] if "mat" in a else a["self"]), R.get(a["vec"]).map(lambda t: t[:, None])
    product = contract(R, left, right).map(lambda t: t.reshape(out_shape(R, entry)))
    if name == "addmv" and a.get("beta", 1) != 0:
        bias = R.get(a["self"]).expand(out_shape(R, entry))
        return Shadow(R.sr.plus(product.dep, bias.dep), product.zero & bias.zero, product.ninf)
    return product


@rule("convolution", "_convolution")
def convolution(R: Replay, entry: Any) -> Shadow:
    """A convolution: an output element reads the input window of its taps, except the taps whose
    weights are forced to zero (masks, causal padding needs none: the padding reads nothing)."""
    a = argmap(entry)
    if a.get("transposed"):
        raise UnknownOp("convolution (transposed)")
    x, w = R.get(a["input"]), R.get(a["weight"])
    shape = out_shape(R, entry)
    groups, rank = int(a.get("groups", 1)), x.dep.dim() - 2
    stride, padding, dilation = (_per_dim(a.get(k), rank, d) for k, d in (("stride", 1), ("padding", 0), ("dilation", 1)))
    dep = torch.full(shape, R.sr.none, dtype=torch.float64)
    if not empty(R, x):
        if R.sr is MaxSemiring:
            windowed = _max_conv(x.dep, ~w.zero, stride, padding, dilation, groups)
        else:
            mask = (~w.zero).to(torch.float64)
            mask = mask / mask.flatten(1).sum(1).clamp(min=1).reshape(-1, *([1] * (mask.dim() - 1)))
            windowed = torch.ops.aten.convolution(x.dep, mask, None, stride, padding, dilation, False, [0] * rank, groups)
        dep = R.sr.plus(dep, windowed)
    if not empty(R, w):
        per_channel = R.sr.reduce(w.dep, tuple(range(1, w.dep.dim())))
        dep = R.sr.plus(dep, per_channel.reshape(1, -1, *([1] * rank)).expand(shape))
    bias = a.get("bias")
    if isinstance(bias, Ref):
        dep = R.sr.plus(dep, R.get(bias).dep.reshape(1, -1, *([1] * rank)).expand(shape))
    return Shadow(dep, *_false(shape))


def _per_dim(value: Any, rank: int, default: int) -> list[int]:
    if value is None:
        return [default] * rank
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    return values * rank if len(values) == 1 else values


def _max_conv(x: torch.Tensor, allowed: torch.Tensor, stride: list[int], padding: list[int], dilation: list[int], groups: int) -> torch.Tensor:
    """Max-semiring convolution: windows of x (padded with -inf), each output channel the maximum
    over the (input channel, tap) pairs its weights allow."""
    rank = x.dim() - 2
    pad = [p for pair in zip(padding[::-1], padding[::-1]) for p in pair]
    t = F.pad(x, pad, value=-math.inf) if any(padding) else x
    kernel = allowed.shape[2:]
    for d in range(rank):
        span = dilation[d] * (kernel[d] - 1) + 1
        t = t.unfold(2 + d, span, stride[d])[..., ::dilation[d]]
    batch, channels = t.shape[:2]
    spatial = t.shape[2:2 + rank]
    windows = t.permute(0, *range(2, 2 + rank), 1, *range(2 + rank, 2 + 2 * rank)).reshape(batch, *spatial, channels * math.prod(kernel))
    cout = allowed.shape[0]
    per_group_in = channels // groups * math.prod(kernel)
    per_group_out = cout // groups
    parts = []
    for g in range(groups):
        values = windows[..., g * per_group_in:(g + 1) * per_group_in]
        mask = allowed[g * per_group_out:(g + 1) * per_group_out].reshape(per_group_out, per_group_in)
        parts.append(MaxSemiring.masked_reduce(values, mask))
    out = torch.cat(parts, dim=-1)
    return out.permute(0, rank + 1, *range(1, rank + 1)).contiguous()


@rule("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
      "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_fused_attention_overrideable")
def attention(R: Replay, entry: Any) -> Any:
    """Fused attention: query i reads itself and the keys and values of the positions its mask
    (is_causal: j <= i, attn_mask: True or not -inf) allows."""
    a = argmap(entry)
    q, k, v = R.get(a["query"]), R.get(a["key"]), R.get(a["value"])
    length, source = q.dep.shape[-2], k.dep.shape[-2]
    allowed = torch.ones(length, source, dtype=torch.bool)
    if a.get("is_causal"):
        allowed = torch.tril(allowed)
    mask = a.get("attn_mask", a.get("attn_bias"))
    extra = None
    if isinstance(mask, Ref):
        value = R.value(mask) if R.is_const(mask) else None
        if value is None:
            extra = R.sr.reduce(R.get(mask).dep, tuple(range(len(R.shape(mask)))))
        else:
            ok = value if value.dtype == torch.bool else value > MASK_VALUE
            allowed = allowed & ok
    qd = R.sr.reduce(q.dep, (-1,))
    kd, vd = R.sr.reduce(k.dep, (-1,)), R.sr.reduce(v.dep, (-1,))
    kv = R.sr.plus(kd, vd)
    read = _side(R, kv[..., None, :], allowed)[..., 0, :] if allowed.dim() > 2 else R.sr.masked_reduce(kv, allowed)
    out = R.sr.plus(qd, read)
    if extra is not None:
        out = R.sr.plus(out, extra)
    def make(index: int, shape: tuple[int, ...]) -> Shadow:
        if index == 0:
            return Shadow(out[..., None].expand(shape).clone(), *_false(shape))
        return Shadow(out.clone(), *_false(shape)) if shape == tuple(out.shape) else R.none(shape)
    return per_output(R, entry, make)


# -- indexing ----------------------------------------------------------------------------------

def _need(R: Replay, ref: Any) -> torch.Tensor:
    value = R.value(ref)
    if value is None:
        raise UnknownOp("indexing with values that were not recorded")
    return value


@rule("embedding")
def embedding(R: Replay, entry: Any) -> Shadow:
    """A lookup: each output vector reads the index that chose it (and the table's row)."""
    a = argmap(entry)
    index, table = a["indices"], R.get(a["weight"])
    shape = out_shape(R, entry)
    dep = R.get(index).dep[..., None].expand(shape)
    if not empty(R, table):
        dep = R.sr.plus(dep, table.dep[_need(R, index).long()])
    return Shadow(dep.clone(), *_false(shape))


@rule("index_select")
def index_select(R: Replay, entry: Any) -> Shadow:
    a = argmap(entry)
    source, dim = R.get(a["self"]), a["dim"] % max(1, len(R.shape(a["self"])))
    index = _need(R, a["index"]).long()
    picked = source.map(lambda t: t.index_select(dim, index))
    reads = broadcast_along(R.get(a["index"]).dep, dim, picked.dep.dim())
    return Shadow(R.sr.plus(picked.dep, reads.expand(picked.dep.shape)), picked.zero, picked.ninf)


@rule("gather")
def gather(R: Replay, entry: Any) -> Shadow:
    a = argmap(entry)
    source, dim = R.get(a["self"]), a["dim"]
    index = _need(R, a["index"]).long()
    picked = source.map(lambda t: t.gather(dim, index))
    return Shadow(R.sr.plus(picked.dep, R.get(a["index"]).dep), picked.zero, picked.ninf)


@rule("index.Tensor", "_unsafe_index.Tensor")
def index(R: Replay, entry: Any) -> Shadow:
    a = argmap(entry)
    indices = [None if i is None else _need(R, i) for i in a["indices"]]
    picked = R.get(a["self"]).map(lambda t: torch.ops.aten.index.Tensor(t, indices))
    return _plus_indices(R, picked, [i for i in a["indices"] if isinstance(i, Ref)])


def _plus_indices(R: Replay, shadow: Shadow, refs: list[Ref]) -> Shadow:
    """Indices that depend on the data make every selected element read them (conservatively,
    all of their dependencies)."""
    dep = shadow.dep
    for ref in refs:
        reads = R.get(ref).dep
        if not bool((reads == R.sr.none).all()):
            dep = R.sr.plus(dep, R.sr.reduce(reads, tuple(range(reads.dim()))).expand(dep.shape))
    return Shadow(dep, shadow.zero, shadow.ninf)


@rule("index_put", "_index_put_impl", "index_put_", "_unsafe_index_put")
def index_put(R: Replay, entry: Any) -> Shadow:
    a = argmap(entry)
    indices = [None if i is None else _need(R, i) for i in a["indices"]]
    target = R.get(a["self"]).map(torch.clone)
    values = R.get(a["values"])
    current = target.map(lambda t: torch.ops.aten.index.Tensor(t, indices))
    values = values.expand(current.dep.shape)
    dep = R.sr.plus(current.dep, values.dep) if a.get("accumulate") else values.dep
    out = Shadow(torch.ops.aten.index_put(target.dep, indices, dep), torch.ops.aten.index_put(target.zero, indices, values.zero & (current.zero if a.get("accumulate") else True)),
                 torch.ops.aten.index_put(target.ninf, indices, values.ninf))
    return _plus_indices(R, out, [i for i in a["indices"] if isinstance(i, Ref)])


@rule("scatter", "scatter_add", "scatter_reduce", "scatter_")
def scatter(R: Replay, entry: Any) -> Shadow:
    """Writes at positions an index chooses: every element of a written slice reads the index
    (which positions change depends on it), and the written values."""
    a = argmap(entry)
    target = R.get(a["self"])
    dim = a["dim"] % max(1, target.dep.dim())
    index_ref = a["index"]
    index = _need(R, index_ref).long()
    dep = target.dep.clone()
    src = a.get("src")
    if isinstance(src, Ref):
        written = R.get(src).dep
        if R.sr is MaxSemiring:
            dep = dep.scatter_reduce(dim, index, written[tuple(slice(0, n) for n in index.shape)], "amax", include_self=True)
        else:
            dep = dep.scatter_add(dim, index, written[tuple(slice(0, n) for n in index.shape)])
    reads = R.sr.reduce(R.get(index_ref).dep, (dim,), True)
    full = list(dep.shape)
    reads = reads.expand(*[n if i != dim else 1 for i, n in enumerate(reads.shape)])
    slices = tuple(slice(0, n) if i != dim else slice(None) for i, n in enumerate(reads.shape))
    dep[slices] = R.sr.plus(dep[slices], reads.expand(dep[slices].shape))
    return Shadow(dep, *_false(tuple(full)))


# -- normalisations and recurrences ---------------------------------------------------------------

@rule("native_layer_norm")
def layer_norm(R: Replay, entry: Any) -> Any:
    a = argmap(entry)
    x = R.get(a["input"])
    n = len(a["normalized_shape"])
    dims = tuple(range(x.dep.dim() - n, x.dep.dim()))
    group = R.sr.reduce(x.dep, dims, True)
    out = _with_affine(R, group.expand(x.dep.shape).clone(), a, n)
    stats = Shadow(group.clone(), *_false(tuple(group.shape)))
    return [Shadow(out, *_false(tuple(out.shape))), stats, Shadow(group.clone(), *_false(tuple(group.shape)))]


def _with_affine(R: Replay, dep: torch.Tensor, a: dict[str, Any], trailing: int) -> torch.Tensor:
    for key in ("weight", "bias"):
        p = a.get(key)
        if isinstance(p, Ref) and not empty(R, R.get(p)):
            dep = R.sr.plus(dep, R.get(p).dep.expand(dep.shape[-trailing:]))
    return dep


@rule("native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training", "_native_batch_norm_legit_functional",
      "cudnn_batch_norm", "miopen_batch_norm")
def batch_norm(R: Replay, entry: Any) -> Any:
    """Batch normalisation: in training, each element reads every element of its channel across
    the batch (which couples the items); in evaluation, only itself."""
    a = argmap(entry)
    x = R.get(a["input"])
    training = bool(a.get("training", False)) and "no_training" not in entry.func._schema.name
    if training:
        dims = tuple(d for d in range(x.dep.dim()) if d != 1)
        dep = R.sr.reduce(x.dep, dims, True).expand(x.dep.shape).clone()
    else:
        dep = x.dep.clone()
    outputs = entry.outputs if isinstance(entry.outputs, (list, tuple)) else [entry.outputs]
    shadows: list[Any] = [Shadow(dep, *_false(tuple(dep.shape)))]
    for o in outputs[1:]:
        shadows.append(R.none(R.shape(o)) if isinstance(o, Ref) else o)
    return shadows if isinstance(entry.outputs, (list, tuple)) else shadows[0]


@rule("native_group_norm")
def group_norm(R: Replay, entry: Any) -> Any:
    a = argmap(entry)
    x = R.get(a["input"])
    n, groups = int(a["N"]), int(a["group"])
    grouped = x.dep.reshape(n, groups, -1)
    dep = R.sr.reduce(grouped, (2,), True).expand(grouped.shape).reshape(x.dep.shape).clone()
    stats = R.sr.reduce(grouped, (2,))
    return [Shadow(dep, *_false(tuple(dep.shape))), Shadow(stats.clone(), *_false(tuple(stats.shape))),
            Shadow(stats.clone(), *_false(tuple(stats.shape)))]


@rule("lstm.input", "gru.input", "rnn_tanh.input", "rnn_relu.input", "_cudnn_rnn", "miopen_rnn")
def recurrent(R: Replay, entry: Any) -> Any:
    """nn.LSTM, nn.GRU, nn.RNN: the output at step t reads the inputs of steps <= t and the initial
    state of its item (all steps when bidirectional); the final states read every step."""
    a = argmap(entry)
    batch_first = bool(a.get("batch_first", False))
    hx = a.get("hx")
    states = [h for h in (hx if isinstance(hx, (list, tuple)) else [hx, a.get("cx")]) if isinstance(h, Ref)]
    direction = "both" if a.get("bidirectional") else "forward"
    return _sequence(R, entry, R.get(a["input"]).dep, 1 if batch_first else 0, states, direction)


@rule("mkldnn_rnn_layer")
def rnn_layer(R: Replay, entry: Any) -> Any:
    """One layer and direction of a recurrent network on the CPU (input (T, B, F))."""
    a = argmap(entry)
    states = [h for h in (a.get("hx_"), a.get("cx_")) if isinstance(h, Ref)]
    return _sequence(R, entry, R.get(a["input"]).dep, 0, states, "reverse" if a.get("reverse") else "forward")


def _sequence(R: Replay, entry: Any, x: torch.Tensor, time_dim: int, states: list[Ref], direction: str) -> Any:
    """The outputs of a recurrence over axis `time_dim` of x (time, batch, features in some order)."""
    batch_dim = 1 - time_dim
    per_step = R.sr.reduce(x, (2,))                                        # (T, B) or (B, T)
    for h in states:                                                         # ([layers * directions,] B, H)
        dep = R.get(h).dep
        initial = R.sr.reduce(dep, tuple(d for d in range(dep.dim()) if d != dep.dim() - 2))
        per_step = R.sr.plus(per_step, broadcast_along(initial, batch_dim, 2).expand(per_step.shape))
    if direction == "both":
        steps = R.sr.reduce(per_step, (time_dim,), True).expand(per_step.shape)
    elif direction == "reverse":
        steps = R.sr.prefix(per_step.flip(time_dim), time_dim).flip(time_dim)
    else:
        steps = R.sr.prefix(per_step, time_dim)
    final = R.sr.reduce(per_step, (time_dim,))                              # (B,)

    def make(index: int, shape: tuple[int, ...]) -> Shadow:
        if index == 0:
            return Shadow(steps[..., None].expand(shape).clone(), *_false(shape))
        if len(shape) >= 2 and shape[-2] == final.shape[0]:
            return Shadow(final.reshape(*([1] * (len(shape) - 2)), -1, 1).expand(shape).clone(), *_false(shape))
        return R.none(shape)
    return per_output(R, entry, make)


@rule("max_pool1d", "max_pool2d", "max_pool3d", "max_pool2d_with_indices", "max_pool3d_with_indices", "avg_pool1d", "avg_pool2d",
      "avg_pool3d", "im2col")
def pooling(R: Replay, entry: Any) -> Any:
    """A window operation: in the max semiring the maximum over each window (max pooling of the
    shadow), in the linear one its average; im2col lays the windows out as channels."""
    name = entry.func._schema.name.split("::")[-1]
    x = R.get(entry.args[0])
    rest = list(entry.args[1:])
    if name == "im2col":
        a = argmap(entry)
        kernel, dilation, padding, stride = a["kernel_size"], a["dilation"], a["padding"], a["stride"]
        source = F.pad(x.dep, [p for p in padding[::-1] for _ in range(2)], value=R.sr.none)
        dep = torch.ops.aten.im2col(source, kernel, dilation, [0, 0], stride)
        return Shadow(dep, *_false(tuple(dep.shape)))
    shape = out_shape(R, entry)
    rank = len(shape) - (2 if len(shape) > 2 else 1)
    kernel = _per_dim(rest[0], rank, 1)
    stride = _per_dim(rest[1] if len(rest) > 1 and rest[1] else kernel, rank, 1)
    padding = _per_dim(rest[2] if len(rest) > 2 else 0, rank, 0)
    dilation = _per_dim(rest[3], rank, 1) if "max" in name and len(rest) > 3 else [1] * rank
    if R.sr is MaxSemiring:
        dep = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[rank](x.dep, kernel, stride, padding, dilation)
    else:
        dep = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[rank](x.dep, kernel, stride, padding)
    result = Shadow(dep.reshape(shape), *_false(shape))
    if isinstance(entry.outputs, (list, tuple)):
        return [result, R.none(out_shape(R, entry, 1))]
    return result
