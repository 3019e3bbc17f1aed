"""`arspec verify` on hand-written PyTorch models (tests/fixtures/handwritten.py): the tracer's
dependencies equal the ones measured by perturbation, the classic bugs are caught and named at the
first element they affect, batch coupling and cache drift are found, the command line answers in
one line with the right exit code."""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from arspec.cli.main import main
from arspec.verification import verify
from arspec.verification.analysis import BACKWARD_FACTOR, field_rows, fields
from arspec.verification.api import make_input
from arspec.verification.perturb import measured_dependencies
from arspec.verification.tape import record

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "handwritten.py"
sys.path.insert(0, str(FIXTURE.parent))
import handwritten as hw  # noqa: E402

# name, event shape, input, output pattern, order, autoregressive?
CASES = [
    ("made", (16,), "binary", "b d", "raster", True),
    ("made_off_by_one", (16,), "binary", "b d", "raster", False),
    ("pixelcnn", (1, 7, 7), "binary", None, "raster", True),
    ("pixelcnn_mask_b_first", (1, 7, 7), "binary", None, "raster", False),
    ("pixelcnn_rgb", (3, 4, 4), "categorical:4", "b (k c) h w", "rgb", True),
    ("pixelcnn_rgb_swapped", (3, 4, 4), "categorical:4", "b (k c) h w", "rgb", False),
    ("wavenet", (32,), "categorical:16", "b k t", "raster", True),
    ("wavenet_same_padding", (32,), "categorical:16", "b k t", "raster", False),
    ("transformer", (24,), "categorical:12", "b t k", "raster", True),
    ("transformer_fused", (24,), "categorical:12", "b t k", "raster", True),
    ("transformer_additive_mask", (24,), "categorical:12", "b t k", "raster", True),
    ("transformer_unshifted", (24,), "categorical:12", "b t k", "raster", False),
    ("lstm", (16,), "categorical:8", "b t k", "raster", True),
    ("lstm_unshifted", (16,), "categorical:8", "b t k", "raster", False),
]


def _traced_and_measured(name, shape, kind, output, order):
    model = getattr(hw, name)()
    report = verify(model, shape, input=kind, output=output, order=order, mode="eval", blind="none")
    layout = report.layout
    n = int(np.prod(shape))
    tape = record(copy.deepcopy(model).eval(), make_input(kind, shape, 2, torch.float32, 0))
    elements = [tuple(int(i) for i in np.unravel_index(k, shape)) for k in range(n)]
    traced = fields(tape, layout, 2, elements).reshape(n, n)
    measured = np.zeros((n, n), dtype=bool)
    for seed in range(3):                                 # ReLU units off at one point: the union of a few
        x = make_input(kind, shape, 1, torch.float32, 10 + seed)
        measured |= measured_dependencies(model, x, kind, layout.pattern, layout.sizes, layout.axes, seed=seed).numpy()
    return report, traced, measured


@pytest.mark.parametrize("name, shape, kind, output, order, autoregressive", CASES, ids=[c[0] for c in CASES])
def test_traced_dependencies_equal_the_measured_ones(name, shape, kind, output, order, autoregressive):
    report, traced, measured = _traced_and_measured(name, shape, kind, output, order)
    assert report.autoregressive is autoregressive
    assert not (measured & ~traced).any(), "a measured dependency the tracer missed"
    if not name.startswith("made"):                      # MADE's ReLU units may stay off at every point tried
        assert np.array_equal(traced, measured)
    steps = report.layout.steps.reshape(-1)
    latest = report.modes[0].latest.reshape(-1)
    expected = np.array([steps[row].max() if row.any() else -np.inf for row in traced])
    assert np.array_equal(latest, expected)               # the max replay agrees with the fields, element by element


def test_fields_are_the_same_however_many_rows_a_backward_pass_stacks():
    model = hw.pixelcnn_rgb().eval()
    shape = (3, 4, 4)
    tape = record(model, make_input("categorical:4", shape, 2, torch.float32, 0))
    layout = verify(model, shape, input="categorical:4", output="b (k c) h w", order="rgb", mode="eval", blind="none").layout
    elements = [tuple(int(i) for i in np.unravel_index(k, shape)) for k in range(48)]
    assert field_rows(tape, 2, 1) == 1 and field_rows(tape, 2, 2 ** 40) > 1
    assert np.array_equal(fields(tape, layout, 2, elements, budget=1), fields(tape, layout, 2, elements, budget=2 ** 40))


class _NeedsTwoItems(torch.nn.Module):
    """A PixelCNN that refuses a batch of one (as a module calling x.squeeze() would break)."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = hw.pixelcnn()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] < 2:
            raise RuntimeError("a batch of one")
        return self.inner(x)


def test_fields_come_from_one_item_and_from_the_whole_batch_where_one_item_fails():
    alone = verify(hw.pixelcnn(), (1, 6, 6), blind="all", mode="eval")
    batched = verify(_NeedsTwoItems(), (1, 6, 6), blind="all", mode="eval")
    assert alone.blind is not None and batched.blind is not None and alone.blind.affected > 0
    assert (alone.blind.affected, alone.blind.example) == (batched.blind.affected, batched.blind.example)


def test_the_fields_backward_stacks_only_as_many_rows_as_the_budget_allows():
    model = hw.WaveNet(classes=16, channels=8, dilations=(1, 2, 4, 8)).eval()
    tape = record(model, make_input("categorical:16", (256,), 2, torch.float32, 0))
    per_row = BACKWARD_FACTOR * 8 * (tape.peak_data_elements() // 2)
    assert tape.peak_data_elements() >= 2 * 8 * 256          # at least the hidden channels of both items
    for rows in (1, 2, 3):
        assert field_rows(tape, 2, rows * per_row) == rows


@pytest.mark.parametrize("name, shape, kind, output, order, element, reads", [
    ("pixelcnn_mask_b_first", (1, 6, 6), "binary", None, "raster", (0, 0, 0), (0, 0, 0)),
    ("pixelcnn_rgb_swapped", (3, 4, 4), "categorical:4", "b (k c) h w", "rgb", (0, 0, 0), (2, 0, 0)),
    ("wavenet_same_padding", (32,), "categorical:16", "b k t", "raster", (0,), (15,)),      # the latest it reads
    ("transformer_unshifted", (24,), "categorical:12", "b t k", "raster", (0,), (0,)),
    ("lstm_unshifted", (16,), "categorical:8", "b t k", "raster", (0,), (0,)),
    ("made_off_by_one", (16,), "binary", "b d", "raster", (0,), (0,)),
])
def test_the_classic_bugs_are_named_at_their_first_element(name, shape, kind, output, order, element, reads):
    report = verify(getattr(hw, name)(), shape, input=kind, output=output, order=order, blind="none")
    assert report.first_leak() == (element, reads)


def test_an_order_agnostic_model_is_autoregressive_in_its_own_order_only(tmp_path):
    steps = tmp_path / "steps.npy"
    np.save(steps, np.argsort(hw.RANDOM_ORDER))
    model = hw.made_random_order()
    assert not verify(model, (16,), output="b d", blind="none").autoregressive
    assert verify(model, (16,), output="b d", order=str(steps), blind="none").autoregressive
    permutation = tmp_path / "order.npy"
    np.save(permutation, hw.RANDOM_ORDER.reshape(1, 16))
    with pytest.raises(ValueError, match="expected the steps of every element"):
        verify(model, (16,), output="b d", order=str(permutation))


def test_batch_norm_couples_the_items_in_training_only():
    report = verify(hw.pixelcnn_batchnorm(), (1, 6, 6), blind="none")
    train, evaluation = (next(m for m in report.modes if m.mode == w) for w in ("train", "eval"))
    assert train.coupled and not evaluation.coupled and not evaluation.leaks
    assert not report.autoregressive
    assert verify(hw.pixelcnn_batchnorm(), (1, 6, 6), mode="eval", blind="none").autoregressive


def test_dropout_in_training_is_no_leak():
    assert verify(hw.pixelcnn(), (1, 6, 6), mode="train", blind="none").autoregressive


def test_the_pixelcnn_blind_spot_is_found_and_fails_strict():
    report = verify(hw.pixelcnn(), (1, 8, 8), blind="all", strict=True)
    assert report.autoregressive and not report.ok
    assert report.blind is not None and report.blind.affected and report.blind.looked_at == 64
    assert verify(hw.wavenet(), (32,), input="categorical:16", output="b k t", blind="all", strict=True).ok


def test_a_drifting_kv_cache_is_caught_at_its_first_element():
    model = hw.transformer()
    good = verify(model, (24,), input="categorical:12", output="b t k", step=hw.transformer_step, blind="none")
    assert good.ok and good.cache is not None and good.cache.max_difference < 1e-9
    bad = verify(model, (24,), input="categorical:12", output="b t k", step=hw.transformer_step_drifting, blind="none")
    assert bad.autoregressive and not bad.ok and bad.cache is not None and bad.cache.first == (1,)


def test_values_read_into_python_and_operations_without_rules_are_reported():
    report = verify(hw.lstm(), (16,), input="categorical:8", output="b t k", blind="none", mode="eval")
    assert any("item()" in e and "handwritten.py" in e for e in report.modes[0].escapes)

    class Spectral(torch.nn.Module):                       # an FFT: no dependency rule
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.fft.irfft(torch.fft.rfft(x, dim=-1), n=x.shape[-1], dim=-1)
    conservative = verify(Spectral(), (8,), input="real", output="b t", blind="none", mode="eval")
    assert not conservative.autoregressive and any("fft" in op for op in conservative.modes[0].unknown)


# -- the command line ------------------------------------------------------------------------------

def cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as stop:
        code = int(stop.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_verify_command_exit_codes_report_json_and_picture(tmp_path, capsys):
    target = f"{FIXTURE}:wavenet"
    code, out, _ = cli(capsys, "verify", target, "--event-shape", "32", "--input", "categorical:16", "--output", "b k t")
    assert code == 0 and ": autoregressive in raster order" in out
    code, out, _ = cli(capsys, "verify", f"{FIXTURE}:pixelcnn_mask_b_first", "--event-shape", "1,6,6", "--picture", str(tmp_path / "f.png"))
    assert code == 1 and "leak: element (0, 0, 0) (step 0) reads (0, 0, 0) (step 0), itself; 36 of 36" in out
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    code, out, _ = cli(capsys, "verify", f"{FIXTURE}:pixelcnn", "--event-shape", "1,6,6", "--strict", "--json", "--max-memory", "1MB")
    data = json.loads(out)
    assert code == 1 and data["autoregressive"] and not data["ok"] and data["blind_spots"]["affected"] > 0
    code, out, _ = cli(capsys, "verify", f"{FIXTURE}:transformer", "--event-shape", "24", "--input", "categorical:12",
                       "--step", f"{FIXTURE}:transformer_step_drifting")
    assert code == 1 and "incremental path differs from the full pass, first at element (1,)" in out


@pytest.mark.parametrize("args, says", [
    (["tests/fixtures/none.py:model", "--event-shape", "4"], "no such file"),
    ([f"{FIXTURE}:nothing", "--event-shape", "4"], "has no 'nothing'"),
    ([f"{FIXTURE}:wavenet", "--event-shape", "32", "--input", "categorical:16", "--output", "b t k x"], "--output"),
    ([f"{FIXTURE}:wavenet", "--event-shape", "3,x", "--input", "categorical:16"], "--event-shape"),
    ([f"{FIXTURE}:wavenet", "--event-shape", "32", "--input", "categorical:1"], "categorical:K with K at least 2"),
    ([f"{FIXTURE}:pixelcnn", "--event-shape", "1,6,6", "--order", "nowhere.npy"], "--order nowhere.npy"),
    ([f"{FIXTURE}:pixelcnn", "--event-shape", "1,6,6", "--output", "b c h"], "--output"),
])
def test_bad_verify_input_is_one_line_and_exit_2(capsys, args, says):
    code, _, err = cli(capsys, "verify", *args)
    assert code == 2 and says in err and err.count("\n") == 1 and "internal error" not in err, err
