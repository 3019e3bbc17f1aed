"""Every spec in the zoo: valid, autoregressive (statically and as compiled), consistent
log-probabilities, valid samples, normalised on tiny events; every broken spec is rejected."""
from __future__ import annotations

import re
from pathlib import Path

import jsonschema
import pytest
import torch
import yaml

import arspec
from arspec.dynamic import dynamic_check
from arspec.spec.schema import schema_json, spec_schema
from tests.helpers import all_configurations, verified

ROOT = Path(__file__).resolve().parent.parent
ALL_SPECS = sorted((ROOT / "specs").glob("*.yaml"))
BROKEN = sorted((ROOT / "specs" / "broken").glob("*.yaml"))


def _has_parts(path: Path) -> bool:
    return "parts" in yaml.safe_load(path.read_text())


ZOO = [p for p in ALL_SPECS if not _has_parts(p)]          # one autoregressive model each
ZOO_PARTS = [p for p in ALL_SPECS if _has_parts(p)]        # models of several parts (PixelVAE)


def tiny_overrides(path: Path) -> list[str]:
    spec = arspec.load_spec(path)
    shape = spec.event.shape
    if len(shape) == 1:
        local = [name for name, c in spec.conditioning.items() if c.type == "local"]
        # narrower layers: the zoo tests are about the structure, not the width
        narrow = [f"params.{k}={v}" for k, v in (("residual", 8), ("gate", 16), ("skip", 16), ("width", 16), ("hidden", 32), ("key", 4))
                  if k in spec.params]
        return ["event.shape=[8]"] + [f"conditioning.{name}.upsample=4" for name in local] + narrow
    if len(shape) == 4:                          # a video: three frames of 4x4, narrower layers
        narrow = [f"params.{k}={v}" for k, v in (("channels", 4), ("state", 4)) if k in spec.params]
        levels = ["distribution.classes=4"] if spec.distribution.type == "categorical" else []
        return [f"event.shape=[3,{shape[1]},4,4]", "graph.decoder.repeat.times=1"] + narrow + levels
    if spec.orderings[0].type == "multiscale":   # two halvings down to a 1x1 base, narrower layers
        narrow = [f"params.{k}={v}" for k, v in (("channels", 8), ("double", 16), ("upscale_channels", 16)) if k in spec.params]
        return [f"event.shape=[{shape[0]},4,4]", "ordering.base=1"] + narrow
    small = [f"params.{k}=2" for k in ("kernel",) if k in spec.params]     # ConvNADE's valid/full kernels fit 3x3
    return [f"event.shape=[{shape[0]},3,3]", *small]


@pytest.mark.parametrize("path", ZOO, ids=lambda p: p.stem)
def test_zoo_spec_is_valid_and_autoregressive(path):
    verified(arspec.load_spec(path))


@pytest.mark.parametrize("path", ZOO, ids=lambda p: p.stem)
def test_zoo_module_dependencies_match_the_static_analysis(path):
    spec = arspec.load_spec(path, overrides=tiny_overrides(path))
    result = dynamic_check(spec, arspec.compile(spec, seed=0))
    assert result.agrees, (result.missing[:5], result.unexpected[:5])


BACKENDS = ["torch", "torch-codegen"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("path", ZOO, ids=lambda p: p.stem)
def test_zoo_log_prob_is_the_sum_of_its_elements_and_samples_score_finitely(path, backend):
    spec = arspec.load_spec(path, overrides=tiny_overrides(path))
    model = arspec.compile(spec, backend=backend, seed=0).eval()
    gen = torch.Generator().manual_seed(0)
    x, context = model.example_inputs(3, gen)
    with torch.no_grad():
        assert torch.allclose(model.log_prob(x, **context), model.log_prob_elements(x, **context).flatten(1).sum(1))
        samples = model.sample(3, generator=torch.Generator().manual_seed(1), **context)
        assert samples.shape == (3, *spec.event.shape)
        assert model.distribution.validate(samples) is None
        assert torch.isfinite(model.log_prob(samples, **context)).all()


def _image_cases() -> list:
    """(path, backend) for every image spec; the multiscale model's 65,536 configurations run on the
    generated code only under `make test-all` (the interpreter case covers it in `make test`)."""
    cases = []
    for p in ZOO:
        if len(arspec.load_spec(p).event.shape) != 3:
            continue
        for backend in BACKENDS:
            slow = backend != "torch" and arspec.load_spec(p).orderings[0].type == "multiscale"
            cases.append(pytest.param(p, backend, marks=[pytest.mark.slow] if slow else [], id=f"{p.stem}-{backend}"))
    return cases


@pytest.mark.parametrize("path, backend", _image_cases())
def test_zoo_image_models_sum_to_one_on_tiny_events(path, backend):
    spec = arspec.load_spec(path)
    overrides = ["event.shape=[1,3,3]"] if spec.event.shape[0] == 1 else ["event.shape=[3,1,2]", "distribution.classes=4"]
    overrides += [f"params.{k}=2" for k in ("kernel",) if k in spec.params]
    if spec.orderings[0].type == "multiscale":
        overrides = tiny_overrides(path)
    spec = arspec.load_spec(path, overrides=overrides)
    model = arspec.compile(spec, backend=backend, dtype=torch.float64, seed=0).eval()
    classes = model.distribution.classes
    xs = all_configurations(tuple(spec.event.shape), classes)
    context = model.example_context(len(xs))
    context = {k: v[:1].expand(len(xs), *v.shape[1:]) for k, v in context.items()}
    with torch.no_grad():
        total = torch.logsumexp(torch.cat([model.log_prob(xs[i:i + 1024], **{k: v[i:i + 1024] for k, v in context.items()})
                                           for i in range(0, len(xs), 1024)]), 0).exp()
    assert abs(float(total) - 1.0) < 1e-5


def test_every_zoo_spec_satisfies_the_json_schema():
    validator = jsonschema.Draft202012Validator(spec_schema())
    jsonschema.Draft202012Validator.check_schema(spec_schema())
    for path in ALL_SPECS + BROKEN:
        errors = list(validator.iter_errors(yaml.safe_load(path.read_text())))
        assert not errors, (path, [e.message for e in errors[:3]])


def test_the_schema_rejects_what_the_loader_rejects():
    validator = jsonschema.Draft202012Validator(spec_schema())
    spec = yaml.safe_load((ROOT / "specs" / "made.yaml").read_text())
    spec["colour"] = "red"
    assert list(validator.iter_errors(spec))
    spec = yaml.safe_load((ROOT / "specs" / "pixelcnn.yaml").read_text())
    spec["graph"]["input"]["mask"] = "C"
    assert list(validator.iter_errors(spec))


def test_the_committed_schema_file_is_current():
    assert (ROOT / "docs" / "arspec.schema.json").read_text() == schema_json()


def _expected_node(path: Path) -> str | None:
    match = re.search(r"Expected: .*? at ([\w.\[\]]+)", path.read_text())
    return match.group(1).rstrip(".") if match else None


@pytest.mark.parametrize("path", BROKEN, ids=lambda p: p.stem)
def test_broken_spec_fails_strict_check_naming_the_node(path):
    report = arspec.analyze(arspec.load_spec(path))
    problems = report.errors or report.warnings
    assert problems, "the bug went unnoticed"
    expected = _expected_node(path)
    if expected:
        assert any(p.path.startswith(expected) for p in report.errors), [str(p) for p in report.errors]
    for p in problems:
        assert p.location.file == str(path) and p.location.line > 0


@pytest.mark.parametrize("shape", ["[1,28,28]", "[1,64,64]"], ids=["per-position", "offsets"])
def test_the_pixelcnn_blind_spot_is_located_at_the_layer_that_creates_it(shape):
    report = arspec.analyze(arspec.load_spec(ROOT / "specs" / "pixelcnn.yaml", overrides=[f"event.shape={shape}"]))
    assert report.domain == ("offsets" if shape == "[1,64,64]" else "concrete")
    (warning,) = [w for w in report.warnings if "blind spot" in w.message]
    # the 7x7 mask-A layer alone sees the whole causal half of its window; the first 3x3 mask-B
    # layer stacked on it misses the upper right
    assert warning.path == "graph.stack" and "first appears at node 'stack[0]'" in warning.message


# -- models of several parts --------------------------------------------------------------------

def tiny_part_overrides(path: Path) -> list[str]:
    """An 8x8 event with the latent shrunk by the same factor (the encoder's downsampling is kept);
    a student's flows over 16 steps with their context at a quarter of the rate."""
    spec = arspec.load_spec(path)
    if spec.ir.kind == "flows":
        return ["event.shape=[16]"] + [f"parts.{flow}.conditioning.{name}.upsample=4"
                                       for flow in spec.ir.flow_names for name in spec.conditioning]
    factor = spec.event.shape[1] // spec.latent.shape[1]
    return ["event.shape=[1,8,8]", f"latent.shape=[{spec.latent.shape[0]},{8 // factor},{8 // factor}]"]


@pytest.mark.parametrize("path", ZOO_PARTS, ids=lambda p: p.stem)
def test_zoo_latent_variable_model_is_verified_part_by_part(path):
    spec = arspec.load_spec(path)
    report = verified(spec)
    assert not report.warnings, [str(w) for w in report.warnings]
    promise = "read only the noise before t" if spec.ir.kind == "flows" else "autoregressive over x given z"
    assert any(promise in g for g in report.guarantees)


@pytest.mark.parametrize("path", ZOO_PARTS, ids=lambda p: p.stem)
def test_zoo_latent_variable_parts_match_the_static_analysis(path):
    spec = arspec.load_spec(path, overrides=tiny_part_overrides(path))
    model = arspec.compile(spec, seed=0)
    if spec.ir.kind == "flows":                                              # each flow over its input noise
        for flow_spec, flow in zip(spec.ir.flow_specs, model.flows):
            result = dynamic_check(flow_spec, flow)
            assert result.agrees, (result.missing[:5], result.unexpected[:5])
        return
    result = dynamic_check(spec.decoder, model.decoder, cache=True)           # the decoder, given z
    assert result.agrees, (result.missing[:5], result.unexpected[:5], result.cache_problem)
    if model.prior is not None:
        result = dynamic_check(spec.ir.prior_spec, model.prior, cache=True)
        assert result.agrees, (result.missing[:5], result.unexpected[:5], result.cache_problem)


@pytest.mark.parametrize("path", ZOO_PARTS, ids=lambda p: p.stem)
def test_zoo_latent_variable_model_scores_and_samples(path):
    spec = arspec.load_spec(path, overrides=tiny_part_overrides(path))
    model = arspec.compile(spec, seed=0).eval()
    x, context = model.example_inputs(3, torch.Generator().manual_seed(0))
    if spec.ir.kind == "flows":
        samples = model.sample(3, generator=torch.Generator().manual_seed(2), **context)
        assert samples.shape == (3, 16) and torch.isfinite(samples).all()
        return
    z = model.sample_latent(3, torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(model.log_prob(x, z=z), model.log_prob_elements(x, z=z).flatten(1).sum(1))
        assert torch.isfinite(model.elbo(x)).all() and torch.isfinite(model.log_prob(x, iw=3)).all()
        cached = model.sample(3, generator=torch.Generator().manual_seed(2))
        naive = model.sample(3, generator=torch.Generator().manual_seed(2), cache=False)
    assert torch.equal(cached, naive) and model.distribution.validate(cached) is None
