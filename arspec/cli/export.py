"""`arspec export`: a standalone PyTorch file for a spec (or a trained checkpoint, whose weights are
written beside it as safetensors), from a code-generating backend."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def _spec_and_weights(source: str, overrides: list[str]) -> tuple[Any, dict[str, Any] | None]:
    """A spec file, or a checkpoint (file or run folder) with its weights (EMA ones if trained with EMA)."""
    from arspec import load_spec
    path = Path(source)
    if path.suffix in (".yaml", ".yml"):
        return load_spec(path, overrides=overrides), None
    from arspec.checkpoint import read_checkpoint, resolve, spec_of, weights_of
    file = resolve(path)
    tensors, metadata = read_checkpoint(file)
    return spec_of(file, metadata, overrides), weights_of(tensors)


def run(args: Any) -> int:
    from arspec import export
    from arspec.fileio import write_atomically, write_with
    try:
        spec, weights = _spec_and_weights(args.source, args.overrides)
    except (FileNotFoundError, ValueError) as err:
        print(f"arspec export: {err}", file=sys.stderr)
        return 2
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(out, export(spec, backend=args.backend, fast_sampler=args.with_fast_sampler))
    print(f"wrote {out}: standalone PyTorch ({spec.name}, {spec.ir.parameters:,} parameters); use it with: from {out.stem} import Model")
    if weights is not None:
        from safetensors.torch import save_file
        target = out.with_suffix(".safetensors")
        write_with(target, lambda tmp: save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp)))
        print(f"wrote {target}: the trained weights; model.load_state_dict(safetensors.torch.load_file({str(target)!r}))")
    return 0
