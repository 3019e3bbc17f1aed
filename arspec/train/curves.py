"""What a run leaves beside its checkpoints: loss.csv (one row per step, with the validation NLL on
the steps where validation ran and the best checkpoint's step marked), epochs.csv (one row per
validation) and loss.png (both curves, the best checkpoint marked)."""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from arspec.fileio import write_with

STEP_FIELDS = ["step", "epoch", "train_nats", "lr", "validation_nats", "best"]
EPOCH_FIELDS = ["epoch", "step", "train_nats", "validation_nats", "best"]


def append_steps(out: Path, rows: list[dict[str, Any]]) -> None:
    """Append per-step rows to loss.csv (written with each checkpoint, so an interrupted run keeps
    exactly the steps its last checkpoint holds)."""
    path = out / "loss.csv"
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=STEP_FIELDS)
        if new:
            w.writeheader()
        for row in rows:
            w.writerow({k: row.get(k, "") for k in STEP_FIELDS})
        f.flush()
        os.fsync(f.fileno())


def keep_steps_through(out: Path, step: int) -> None:
    """Drop the rows of loss.csv after `step` (a resumed run starts from its checkpoint's step: rows
    written after that checkpoint would otherwise appear twice)."""
    rows = read_steps(out)
    kept = [r for r in rows if (s := _step_of(r)) is not None and s <= step]
    if len(kept) != len(rows):
        write_with(out / "loss.csv", lambda tmp: _write_rows(tmp, kept, STEP_FIELDS))


def _step_of(row: dict[str, str]) -> int | None:
    try:
        return int(row["step"])
    except (KeyError, TypeError, ValueError):
        return None


def _write_rows(path: Path, rows: list[dict[str, Any]], fields: list[str]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow({k: row.get(k, "") for k in fields})


def read_steps(out: Path) -> list[dict[str, str]]:
    path = out / "loss.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_epochs(out: Path, history: list[dict[str, Any]], best_step: int | None) -> None:
    """epochs.csv: one row per validation so far (rewritten after each, atomically, so a long run can be watched)."""
    rows = [{**{k: r.get(k) for k in EPOCH_FIELDS}, "best": int(r.get("step") == best_step)} for r in history]
    write_with(out / "epochs.csv", lambda tmp: _write_rows(tmp, rows, EPOCH_FIELDS))


def write_loss_curve(out: Path, history: list[dict[str, Any]], best_step: int | None, resumed: list[int] | None = None) -> None:
    """Fill the validation columns of loss.csv, write epochs.csv and draw loss.png."""
    validations = {int(r["step"]): r for r in history}
    steps = [r for r in read_steps(out) if _step_of(r) is not None]
    rows = []
    for row in steps:
        step = int(row["step"])
        val = validations.get(step)
        rows.append({**row, "validation_nats": val["validation_nats"] if val else "", "best": int(step == best_step) if val else ""})
    write_with(out / "loss.csv", lambda tmp: _write_rows(tmp, rows, STEP_FIELDS))
    write_epochs(out, history, best_step)
    _draw(out / "loss.png", steps, history, best_step, resumed or [])


def _draw(path: Path, steps: list[dict[str, str]], history: list[dict[str, Any]], best_step: int | None, resumed: list[int]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    if steps:
        ax.plot([int(r["step"]) for r in steps], [float(r["train_nats"]) for r in steps], color="#93a1a1", linewidth=0.8,
                label="train (each step)")
    ax.plot([r["step"] for r in history], [r["train_nats"] for r in history], label="train (mean per epoch)", marker="o")
    val = [(r["step"], r["validation_nats"]) for r in history if r.get("validation_nats") is not None]
    if val:
        ax.plot(*zip(*val), label="validation", marker="s")
    if best_step is not None:
        best = next((v for s, v in val if s == best_step), None)
        ax.axvline(best_step, color="grey", linestyle="--", linewidth=1)
        if best is not None:
            ax.plot([best_step], [best], marker="*", markersize=14, color="gold", markeredgecolor="black", linestyle="none",
                    label=f"best checkpoint (step {best_step})")
    for k, step in enumerate(resumed):
        ax.axvline(step, color="#cb4b16", linestyle=":", linewidth=1.2, label="resumed (--resume)" if k == 0 else None)
    ax.set_xlabel("step")
    ax.set_ylabel("NLL (nats per item)")
    ax.set_title("training")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
