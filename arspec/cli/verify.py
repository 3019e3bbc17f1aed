"""`arspec verify FILE.py:NAME`: prove a hand-written PyTorch module autoregressive (docs/verify.md).
Exit 0 when it is (and, with --strict, has no blind spots), 1 when it is not, 2 for bad input."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from arspec.errors import UsageError


def event_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in text.replace("[", "").replace("]", "").split(",") if s.strip())
    except ValueError:
        raise UsageError(f"--event-shape: expected sizes separated by commas such as 3,32,32, got {text!r}") from None
    if not shape or any(s < 1 for s in shape):
        raise UsageError(f"--event-shape: expected positive sizes, got {text!r}")
    return shape


def run(args: Any) -> int:
    from arspec.verification import VerifyError, verify
    from arspec.verification.loading import load_module, load_object
    from arspec.verification.report import as_json, text
    module = load_module(args.target)
    step = load_object(args.step, "--step") if args.step else None
    if step is not None and not callable(step):
        raise UsageError(f"--step {args.step}: not a function")
    try:
        report = verify(module, event_shape(args.event_shape), input=args.input, output=args.output, order=args.order,
                        strict=args.strict, mode=args.mode, step=step, event_axes=args.event_axes, blind=args.blind_spots,
                        seed=args.seed, picture=bool(args.picture), max_memory=args.max_memory)
    except VerifyError as err:
        raise UsageError(str(err)) from None
    if args.picture:
        from arspec.verification.picture import save_picture
        save_picture(report, Path(args.picture), args.target)
    if args.json:
        sys.stdout.write(json.dumps(as_json(report, args.target), indent=2) + "\n")
    else:
        print("\n".join(text(report, args.target)))
        if args.picture:
            print(f"  picture: {args.picture}")
    return 0 if report.ok else 1
