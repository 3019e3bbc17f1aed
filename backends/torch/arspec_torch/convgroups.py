"""Groups of the interpreter's calls that the C pass (`cpass.py`) computes in one call when no
gradient is wanted: a causal 1-d convolution, then at most one of
  * the gated activation, optionally after a frame-rate context projection added by repetition
    (WaveNet's and the student's filter: conv, projection, add_repeated, gate), and if only a 1x1
    convolution back to the input's width reads the gate, that convolution and its sum with the
    input too (a whole residual layer without skip connections: Parallel WaveNet's flows), or
  * a residual addition (the 1x1 convolution back to the residual stream: conv, add).
A group's inner values must be read by the group alone (nothing kept, nothing else reading), so
running it as one call changes no value other callers see; its last call's value is its output.
The call list itself is unchanged: with gradients, on other devices or dtypes, the calls run one
by one as before."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from arspec_torch import cpass
from arspec_torch.cache import StepCall
from arspec_torch.fusion import readers_of
from arspec_torch.kernels import masked

#: input rows (channels x taps) and output channels above which the calls stay in torch: a tile keeps
#: its buffers on the thread's stack (at most about 230 KiB at these limits)
MAX_ROWS, MAX_OUT = 512, 512


@dataclass(frozen=True)
class ConvGroup:
    """Calls [start, stop) of the list, computed as one C call."""
    stop: int
    conv: StepCall
    context: StepCall | None            # the context projection added after the convolution
    factor: int                         # its repetition along time
    gate: bool
    residual: str | None                # the value added to the convolution's output
    output: str                         # the group's value: its last call's
    back: StepCall | None = None        # a whole residual layer: the 1x1 convolution after the gate


def causal_kernel(call: StepCall, net: torch.nn.Module) -> int | None:
    """The kernel size of a causal, unstrided 1-d convolution call (padding d (K - 1) before,
    none after) whose sizes suit the C pass; None for any other call."""
    if call.kind != "masked_conv" or call.mask_sets or len(call.attrs["dilation"]) != 1:
        return None
    weight = getattr(net, f"{call.id}__weight")
    (dilation,), (before,), (after,), (stride,) = (call.attrs[k] for k in ("dilation", "pad_before", "pad_after", "stride"))
    kernel = weight.shape[-1]
    if weight.dim() != 3 or stride != 1 or after != 0 or before != dilation * (kernel - 1):
        return None
    return kernel if weight.shape[1] * kernel <= MAX_ROWS and weight.shape[0] <= MAX_OUT else None


def conv_groups(calls: list[StepCall], kept: set[str], net: torch.nn.Module) -> dict[int, ConvGroup]:
    """The groups of the call list by their first index."""
    readers = readers_of(calls)

    def only_read_by(value: str, call: StepCall) -> bool:
        return value not in kept and [r.id for r in readers.get(value, [])] == [call.id]

    groups: dict[int, ConvGroup] = {}
    for i, conv in enumerate(calls):
        if causal_kernel(conv, net) is None:
            continue
        nxt = calls[i + 1: i + 4]
        group = ConvGroup(i + 1, conv, None, 1, False, None, conv.id)
        if (len(nxt) == 3 and nxt[0].kind == "context_projection" and nxt[1].kind == "add_repeated"
                and nxt[1].args == (conv.id, nxt[0].id) and len(nxt[1].attrs["factors"]) == 2
                and nxt[1].attrs["factors"][0] == 1 and nxt[2].kind == "gate" and nxt[2].args == (nxt[1].id,)
                and only_read_by(conv.id, nxt[1]) and only_read_by(nxt[0].id, nxt[1]) and only_read_by(nxt[1].id, nxt[2])):
            group = ConvGroup(i + 4, conv, nxt[0], int(nxt[1].attrs["factors"][1]), True, None, nxt[2].id)
        elif nxt and nxt[0].kind == "gate" and nxt[0].args == (conv.id,) and only_read_by(conv.id, nxt[0]):
            group = ConvGroup(i + 2, conv, None, 1, True, None, nxt[0].id)
        elif (nxt and nxt[0].kind == "add" and len(nxt[0].args) == 2 and conv.id in nxt[0].args
              and nxt[0].args[0] != nxt[0].args[1] and only_read_by(conv.id, nxt[0])):
            other = nxt[0].args[1] if nxt[0].args[0] == conv.id else nxt[0].args[0]
            group = ConvGroup(i + 2, conv, None, 1, False, other, nxt[0].id)
        layer = calls[group.stop: group.stop + 2]
        if group.gate and len(layer) == 2 and _closes_layer(group, layer, net, only_read_by):
            group = replace(group, stop=group.stop + 2, back=layer[0], output=layer[1].id)
        groups[i] = group
    return groups


def _closes_layer(group: ConvGroup, layer: list[StepCall], net: torch.nn.Module,
                  only_read_by: Callable[[str, StepCall], bool]) -> bool:
    """Whether the two calls after a gated group are a 1x1 convolution of the gate alone back to
    the group's input width, then its sum with that input (WaveNet's residual connection)."""
    back, add = layer
    x = group.conv.args[0]
    if causal_kernel(back, net) != 1 or back.args != (group.output,) or not only_read_by(group.output, back):
        return False
    if add.kind != "add" or sorted(add.args) != sorted((back.id, x)) or back.id == x or not only_read_by(back.id, add):
        return False
    weight = getattr(net, f"{back.id}__weight")
    return weight.shape[0] == getattr(net, f"{group.conv.id}__weight").shape[1]


def group_applies(group: ConvGroup, values: dict[str, torch.Tensor]) -> bool:
    """Whether the C pass may run this group on these values (its input's dtype, device, rank,
    and no gradient wanted); `run_group` checks the remaining shapes."""
    return cpass.applies(values[group.conv.args[0]])


def run_group(group: ConvGroup, net: torch.nn.Module, values: dict[str, torch.Tensor],
              project: torch.Tensor | None) -> torch.Tensor | None:
    """The group's output through the C pass, or None when these values do not suit it (then the
    caller runs the calls one by one). The caller checked `group_applies`; `project`: the context
    projection's value, if any."""
    x = values[group.conv.args[0]]
    residual = values[group.residual] if group.residual is not None else None
    out_channels = getattr(net, f"{group.conv.id}__weight").shape[0]
    if residual is not None and (residual.dtype != torch.float32 or residual.shape != (x.shape[0], out_channels, x.shape[2])):
        return None
    if project is not None and (project.dtype != torch.float32 or project.shape[-1] * group.factor != x.shape[2]):
        return None
    conv = group.conv
    weight = _masked_weight(net, conv.id)
    bias = getattr(net, f"{conv.id}__bias") if "bias" in conv.tensors else None
    back = None
    if group.back is not None:
        back = (_masked_weight(net, group.back.id), getattr(net, f"{group.back.id}__bias") if "bias" in group.back.tensors else None)
    return cpass.conv(x, weight, bias, dilation=conv.attrs["dilation"][0], context=project, factor=group.factor,
                      residual=residual, gate=group.gate, back=back)


def _masked_weight(net: torch.nn.Module, call_id: str) -> torch.Tensor:
    """weight * mask of a convolution call (kept while neither changes: no gradient is wanted here)."""
    return masked(getattr(net, f"{call_id}__weight"), getattr(net, f"{call_id}__mask"))
