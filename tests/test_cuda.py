"""On a machine with CUDA: every zoo model runs forward and backward on the GPU, its log-probabilities
agree with the CPU's, bf16 autocast training steps stay finite, and cached and naive sampling on
the GPU agree. Skipped where no GPU is present (CI has none)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import arspec
from arspec.dynamic import generic_parameters
from tests.test_zoo import ZOO, tiny_overrides

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def cpu_and_gpu_agree(path: Path, device: str, backend: str = "torch") -> None:
    """The check itself, device-parametric: float64 log-probs on CPU and `device` agree, a bf16
    autocast training step has finite loss and gradients, and samples are valid."""
    spec = arspec.load_spec(path, overrides=tiny_overrides(path))
    cpu = arspec.compile(spec, seed=0, dtype=torch.float64).eval()
    generic_parameters(cpu, 0, spec.ir)
    gpu = arspec.compile(spec, backend=backend, seed=0, dtype=torch.float64, device=device).eval()
    gpu.load_state_dict(cpu.state_dict())
    gen = torch.Generator().manual_seed(0)
    x, context = cpu.example_inputs(4, gen)
    with torch.no_grad():
        want = cpu.log_prob(x, **context)
        got = gpu.log_prob(x.to(device), **{k: v.to(device) for k, v in context.items()}).cpu()
    assert torch.allclose(want, got, rtol=1e-9, atol=1e-9), (want, got)

    model = arspec.compile(spec, backend=backend, seed=0, device=device).train()
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=torch.device(device).type == "cuda"):
        loss = -model.log_prob(x.to(device), **{k: v.to(device) for k, v in context.items()}).mean()
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)

    model.eval()
    ctx = {k: v[:2].to(device) for k, v in context.items()}
    fast = model.sample(2, generator=torch.Generator(device=device).manual_seed(3), cache=True, **ctx)
    slow = model.sample(2, generator=torch.Generator(device=device).manual_seed(3), cache=False, **ctx)
    assert model.distribution.validate(fast) is None
    if model.incremental is not None:
        assert torch.equal(fast, slow)


@pytest.mark.parametrize("backend", ["torch", "torch-codegen"])
@pytest.mark.parametrize("path", ZOO, ids=lambda p: p.stem)
def test_zoo_model_on_cuda_matches_cpu_and_trains_in_bf16(path, backend):
    cpu_and_gpu_agree(path, "cuda", backend)
