"""On a machine with CUDA: every zoo model runs forward and backward on the GPU, its log-probabilities
agree with the CPU's, bf16 autocast training steps stay finite, and cached and naive sampling on
the GPU agree. Skipped where no GPU is present (CI has none)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import arspec
from arspec.dynamic import generic_parameters
from tests.test_zoo import ZOO, ZOO_PARTS, tiny_overrides, tiny_part_overrides

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

    # cached against naive sampling in float64 (float32 kernels differ in their last bits between a
    # whole-sequence convolution and one position's product, which can move a drawn level by one)
    ctx = {k: v[:2].to(device, torch.float64 if v.dtype.is_floating_point else v.dtype) for k, v in context.items()}
    fast = gpu.sample(2, generator=torch.Generator(device=device).manual_seed(3), cache=True, **ctx)
    slow = gpu.sample(2, generator=torch.Generator(device=device).manual_seed(3), cache=False, **ctx)
    assert gpu.distribution.validate(fast) is None
    if gpu.incremental is not None:
        if gpu.distribution.discrete:
            assert torch.equal(fast, slow)
        else:
            assert torch.allclose(fast, slow, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("backend", ["torch", "torch-codegen"])
@pytest.mark.parametrize("path", ZOO, ids=lambda p: p.stem)
def test_zoo_model_on_cuda_matches_cpu_and_trains_in_bf16(path, backend):
    cpu_and_gpu_agree(path, "cuda", backend)


# -- models of several parts ------------------------------------------------------------------------

def _teacher_for(student_spec) -> torch.nn.Module:
    """The zoo's WaveNet teacher shrunk to the tiny student's length and conditioning rate."""
    path = ROOT / "specs" / "wavenet_teacher.yaml"
    spec = arspec.load_spec(path)
    upsample = [f"conditioning.{name}.upsample=4" for name in spec.conditioning]
    narrow = [o for o in tiny_overrides(path) if o.startswith("params.")]
    return arspec.load_spec(path, overrides=[f"event.shape=[{student_spec.event.shape[0]}]", *upsample, *narrow])


def composite_cpu_and_gpu_agree(path: Path, device: str) -> None:
    """A PixelVAE's log p(x | z) and a flow student's transform and log-determinant agree in float64
    on CPU and `device`; a bf16 autocast training step (ELBO, or distillation from a teacher on the
    same device) has a finite loss and finite gradients; the PixelVAE's cached and naive samples agree."""
    spec = arspec.load_spec(path, overrides=tiny_part_overrides(path))
    cpu = arspec.compile(spec, seed=0, dtype=torch.float64).eval()
    gpu = arspec.compile(spec, seed=0, dtype=torch.float64, device=device).eval()
    gpu.load_state_dict(cpu.state_dict())
    x, context = cpu.example_inputs(3, torch.Generator().manual_seed(0))
    on = {k: v.to(device) for k, v in context.items()}
    with torch.no_grad():
        if spec.ir.kind == "flows":
            z = cpu.noise(3, torch.Generator().manual_seed(1))
            want, got = cpu.transform(z, **context), gpu.transform(z.to(device), **on)
            for key in ("x", "log_det"):
                assert torch.allclose(want[key], got[key].cpu(), rtol=1e-9, atol=1e-9), key
        else:
            z = cpu.sample_latent(3, torch.Generator().manual_seed(1))
            want, got = cpu.log_prob(x, z=z, **context), gpu.log_prob(x.to(device), z=z.to(device), **on).cpu()
            assert torch.allclose(want, got, rtol=1e-9, atol=1e-9), (want, got)

    model = arspec.compile(spec, seed=0, device=device).train()
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=torch.device(device).type == "cuda"):
        if spec.ir.kind == "flows":
            teacher = arspec.compile(_teacher_for(spec), seed=0, device=device).eval()
            loss = model.distillation_terms(teacher, on, generator=torch.Generator(device=device).manual_seed(2))["loss"].mean()
        else:
            loss = model.training_loss(x.to(device), **on).mean()
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    if spec.ir.kind == "vae":
        fast = gpu.sample(2, generator=torch.Generator(device=device).manual_seed(3), cache=True)
        slow = gpu.sample(2, generator=torch.Generator(device=device).manual_seed(3), cache=False)
        assert torch.equal(fast, slow) and gpu.distribution.validate(fast) is None


@pytest.mark.parametrize("path", ZOO_PARTS, ids=lambda p: p.stem)
def test_zoo_model_of_several_parts_on_cuda_matches_cpu_and_trains_in_bf16(path):
    composite_cpu_and_gpu_agree(path, "cuda")


@pytest.mark.parametrize("name,shape", [("wavenet", "[64]"), ("gated_pixelcnn", "[1,12,12]"), ("pixelcnn_rgb", "[3,8,8]"),
                                        ("video_pixel_network_small", "[3,1,8,8]"), ("transformer_text", "[16]"),
                                        ("pixelsnail", "[1,6,6]"), ("pixelsnail", "[3,4,4]")])
def test_cached_generation_on_cuda_replays_one_graph_per_step_and_equals_naive_sampling(name, shape):
    spec = arspec.load_spec(ROOT / "specs" / f"{name}.yaml", overrides=[f"event.shape={shape}"])
    model = arspec.compile(spec, seed=0, dtype=torch.float64, device="cuda").eval()
    generic_parameters(model, 0, spec.ir)
    assert model.incremental.engine_for(model) == "static"
    fast = model.sample(3, generator=torch.Generator(device="cuda").manual_seed(5), cache=True)
    assert model.incremental.graphed                     # the step was captured, not run eagerly
    slow = model.sample(3, generator=torch.Generator(device="cuda").manual_seed(5), cache=False)
    assert torch.equal(fast, slow)
