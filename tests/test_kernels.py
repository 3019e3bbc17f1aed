"""Kernels computed differently from their definition for speed equal the definition."""
from __future__ import annotations

import pytest
import torch
from arspec_torch import kernels
from hypothesis import given
from hypothesis import strategies as st


def written_gate(x: torch.Tensor) -> torch.Tensor:
    """The gate as the papers write it: tanh(a) * sigmoid(b) over the channel halves [a, b]."""
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


def swapped_gate(x: torch.Tensor) -> torch.Tensor:
    """A mutation: the halves exchanged, tanh(b) * sigmoid(a)."""
    a, b = x.chunk(2, dim=1)
    return torch.tanh(b) * torch.sigmoid(a)


@given(st.sampled_from([(2, 8, 5), (1, 4, 3, 3), (3, 2, 7)]), st.floats(0.1, 30.0), st.integers(0, 2**16))
def test_the_cpu_gate_equals_tanh_times_sigmoid_in_value_and_gradient(shape, scale, seed):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale
    x.requires_grad_(True)
    grad = torch.randn(shape[0], shape[1] // 2, *shape[2:], dtype=torch.float64)
    fast = kernels.gate(x)
    (fast_grad,) = torch.autograd.grad(fast, x, grad)
    written = written_gate(x)
    (written_grad,) = torch.autograd.grad(written, x, grad)
    assert torch.allclose(fast, written, rtol=0, atol=1e-14)
    assert torch.allclose(fast_grad, written_grad, rtol=0, atol=1e-13)
    assert torch.allclose(kernels.gate(x.detach().float()), written.detach().float(), rtol=0, atol=3e-7)


def test_the_cpu_gate_passes_gradcheck_and_works_under_torch_func():
    x = torch.randn(2, 6, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(kernels.gate, (x,))
    items = x.detach()
    per_item = torch.func.vmap(lambda v: kernels.gate(v[None])[0])(items)
    assert torch.allclose(per_item, written_gate(items), rtol=0, atol=1e-14)
    grads = torch.func.vmap(torch.func.grad(lambda v: kernels.gate(v[None]).sum()))(items)
    (expected,) = torch.autograd.grad(written_gate(x).sum(), x)
    assert torch.allclose(grads, expected, rtol=0, atol=1e-13)


@pytest.mark.parametrize("mutant", [swapped_gate, lambda x: torch.sigmoid(x.chunk(2, dim=1)[0] * 2) * torch.sigmoid(x.chunk(2, dim=1)[1])],
                         ids=["halves swapped", "tanh without its affine map"])
def test_a_wrong_gate_is_told_apart_from_the_written_one(mutant):
    x = torch.randn(2, 8, 5, dtype=torch.float64)
    assert not torch.allclose(mutant(x), written_gate(x), rtol=0, atol=1e-6)
    assert torch.allclose(kernels.gate(x), written_gate(x), rtol=0, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_inference_gate_gives_the_training_gate_bit_for_bit(dtype):
    """Without gradients the gate skips the autograd.Function; its values are the same to the last bit."""
    x = torch.randn(3, 16, 50, dtype=dtype, generator=torch.Generator().manual_seed(1)) * 4
    trained = kernels.SigmoidGate.apply(x.clone().requires_grad_(True))[0].detach()
    with torch.no_grad():
        inferred = kernels.gate(x.clone().requires_grad_(True))
    assert torch.equal(kernels.gate(x), trained) and torch.equal(inferred, trained)
    assert inferred.grad_fn is None and kernels.gate(x.clone().requires_grad_(True)).grad_fn is not None


@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("spatial", [(), (1,), (5, 4)])
def test_channel_norm_is_layer_normalisation_over_each_groups_channels(groups, spatial):
    """The fused kernel against the definition written out: channel j in group j mod G,
    normalised over its group at each position (biased variance, eps 1e-5), then scaled and
    shifted per channel; values and gradients of the input and both parameters."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, *spatial, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(6, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(6, generator=g, dtype=torch.float64, requires_grad=True)
    grouped = x.reshape(2, 6 // groups, groups, *spatial)
    normal = ((grouped - grouped.mean(1, keepdim=True)) / torch.sqrt(grouped.var(1, unbiased=False, keepdim=True) + 1e-5)).reshape(x.shape)
    shape = (1, 6) + (1,) * len(spatial)
    expected = normal * weight.view(shape) + bias.view(shape)
    got = kernels.channel_norm(x, weight, bias, groups=groups)
    assert torch.allclose(got, expected, atol=1e-12)
    seed = torch.randn(expected.shape, generator=g, dtype=torch.float64)
    want = torch.autograd.grad((expected * seed).sum(), (x, weight, bias))
    have = torch.autograd.grad((got * seed).sum(), (x, weight, bias))
    assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(have, want))


class _Calls(torch.utils._python_dispatch.TorchDispatchMode):
    """The ATen operators called while active, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func._schema.name.removeprefix("aten::"))
        return func(*args, **(kwargs or {}))


def test_the_cpu_gates_backward_makes_no_zero_gradients_for_its_saved_factors():
    x = torch.randn(2, 8, 5, requires_grad=True)
    out = kernels.gate(x)
    with _Calls() as calls:
        out.sum().backward()
    assert "zeros" not in calls.names and "zeros_like" not in calls.names
    assert torch.allclose(x.grad, torch.autograd.grad(written_gate(x).sum(), x)[0], atol=1e-6)


def test_an_all_ones_mask_multiplies_nothing_and_a_changed_mask_is_seen_at_the_next_call():
    weight = torch.nn.Parameter(torch.randn(4, 3, 1))
    dense = torch.ones(4, 3, 1)
    assert kernels.masked(weight, dense) is weight
    dense[0, 0, 0] = 0.0                               # an in-place change moves the buffer's version
    product = kernels.masked(weight, dense)
    assert product is not weight and product[0, 0, 0] == 0 and torch.equal(product[1:], weight[1:])
    with torch.no_grad():                              # without gradients the product is kept ...
        kept = kernels.masked(weight, dense)
        assert kernels.masked(weight, dense) is kept
        weight.add_(1.0)                               # ... until the weight changes
        assert torch.equal(kernels.masked(weight, dense), weight * dense)


def test_a_shift_is_one_pad_that_zero_fills_and_crops():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    with _Calls() as calls:
        out = kernels.shift(x, by=(1, -2))
    assert calls.names == ["constant_pad_nd", "constant_pad_nd"]
    assert torch.equal(out[:, :, 1:, :3], x[:, :, :3, 2:])
    assert (out[:, :, 0] == 0).all() and (out[..., 3:] == 0).all()
    assert (kernels.shift(x, by=(9, 0)) == 0).all()    # moved past the edge: all zeros


def test_the_kept_mask_facts_do_not_keep_a_freed_model_alive():
    import gc
    import weakref
    from pathlib import Path

    import arspec
    spec = arspec.load_spec(Path(__file__).resolve().parent.parent / "specs" / "made.yaml",
                            overrides=["params.hidden=8", "event.shape=[1,4,4]", "connectivity.masks=3"])
    model = arspec.compile(spec, seed=0)
    masks = [t for name, t in model.net.named_buffers() if name.endswith("masks")]
    assert masks
    with torch.no_grad():
        model.log_prob(torch.zeros(2, 1, 4, 4))        # the mask views and the masked weights are made and kept
    refs = [weakref.ref(m) for m in masks] + [weakref.ref(p) for p in model.parameters()]
    del model, masks
    gc.collect()
    assert all(r() is None for r in refs)


@pytest.mark.parametrize("spatial", [(7,), (3, 5)])
def test_a_1x1_convolution_of_a_channels_innermost_input_is_the_convolution_and_keeps_the_layout(spatial):
    """After a layer norm the channels lie innermost: the 1x1 convolution is then a matrix
    product (no copy into the channel-major layout), equal to the convolution in values and
    gradients, masked as written, its output in the input's layout."""
    generator = torch.Generator().manual_seed(0)
    inner = torch.randn(2, *spatial, 4, generator=generator, dtype=torch.float64)
    x = inner.movedim(-1, 1).requires_grad_()                     # (2, 4, *S), channels innermost in memory
    weight = torch.randn(6, 4, *(1,) * len(spatial), generator=generator, dtype=torch.float64, requires_grad=True)
    mask = (torch.rand(6, 4, *(1,) * len(spatial), generator=generator) > 0.3).double()
    bias = torch.randn(6, generator=generator, dtype=torch.float64, requires_grad=True)
    attrs = {"dilation": (1,) * len(spatial), "pad_before": (0,) * len(spatial), "pad_after": (0,) * len(spatial),
             "stride": (1,) * len(spatial)}
    fast = kernels.masked_conv(x, weight, mask, bias, **attrs)
    plain = kernels.masked_conv(x.contiguous(), weight, mask, bias, **attrs)
    assert not x.is_contiguous() and fast.movedim(1, -1).is_contiguous() and plain.is_contiguous()
    assert torch.allclose(fast, plain, atol=1e-12)
    weights = torch.randn_like(plain)
    grads = [torch.autograd.grad((out * weights).sum(), (x, weight, bias)) for out in (fast, plain)]
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-12)
    assert torch.equal(grads[0][1] * (1 - mask), torch.zeros_like(weight))      # a masked weight gets no gradient
