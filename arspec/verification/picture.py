"""The dependency field of one element as a picture: what it reads before it (grey), what it reads
at its own step or later (red: a leak), earlier elements inside the box of its field it does not
read (blue: a blind spot), and the element itself (gold). Panels: channels (or frames) of images,
or a strip for sequences."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from arspec.verification.api import VerifyReport

COLOURS = {0: (0.97, 0.97, 0.97), 1: (0.62, 0.62, 0.62), 2: (0.85, 0.15, 0.15), 3: (0.3, 0.45, 0.9), 4: (1.0, 0.78, 0.1)}
LABELS = {0: "not read", 1: "read, earlier", 2: "read, own step or later (leak)", 3: "earlier, not read (blind spot)", 4: "the element"}


def categories(report: VerifyReport) -> np.ndarray:
    """Per element of the event, its category for the picture (keys of COLOURS)."""
    field, element, steps = report.dependency_field, report.field_element, report.layout.steps
    assert field is not None and element is not None
    out = np.zeros(field.shape, dtype=int)
    own = steps[element]
    out[field & (steps < own)] = 1
    out[field & (steps >= own)] = 2
    marked = field.copy()
    marked[element] = True
    box = tuple(slice(int(np.nonzero(marked.any(axis=tuple(a for a in range(marked.ndim) if a != d)))[0].min()),
                      int(np.nonzero(marked.any(axis=tuple(a for a in range(marked.ndim) if a != d)))[0].max()) + 1)
                for d in range(marked.ndim))
    inside = np.zeros(field.shape, dtype=bool)
    inside[box] = True
    out[inside & ~field & (steps < own)] = 3
    out[element] = 4
    return out


def _panels(codes: np.ndarray) -> np.ndarray:
    if codes.ndim == 1:
        return codes[None, None]
    if codes.ndim == 2:
        return codes[None]
    if codes.ndim == 3:
        return codes
    return codes.reshape(-1, *codes.shape[-2:])


def save_picture(report: VerifyReport, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from arspec.fileio import write_with
    from arspec.pictures import used_panels
    panels = _panels(categories(report))
    n = panels.shape[0]
    cols = min(n, 4)
    rows = -(-n // cols)
    sequence = report.dependency_field is not None and report.dependency_field.ndim == 1
    size = (12, 2.6) if sequence else (max(6.0, 3.2 * cols), 3.2 * rows + 1.4)
    fig, axes = plt.subplots(rows, cols, figsize=size, dpi=120, squeeze=False)
    image = np.array([[COLOURS[c] for c in row] for panel in panels for row in panel]).reshape(*panels.shape, 3)
    names = report.layout.axes
    for k, ax in used_panels(axes, n):
        ax.imshow(image[k], interpolation="nearest", aspect="auto" if sequence else "equal")
        for spine in ax.spines.values():
            spine.set_color("#888888")
        if n > 1:
            ax.set_title(f"{names[0]} = {k}" if len(names) == 3 else f"panel {k}", fontsize=9)
    handles = [Patch(color=COLOURS[c], label=label) for c, label in LABELS.items()]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(f"{title}\nwhat element {report.field_element} reads ({report.order} order)", fontsize=10)
    fig.tight_layout(rect=(0, 0.12, 1, 0.9))
    write_with(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
