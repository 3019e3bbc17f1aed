"""`arspec export`: a standalone PyTorch file for a spec (or a trained checkpoint, whose weights are
written beside it as safetensors), from a code-generating backend."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def _spec_and_weights(source: str, overrides: list[str]) -> tuple[Any, dict[str, Any] | None]:
    """A spec file, or a checkpoint (file or run folder) with its weights (EMA ones if trained with EMA)."""
    from arspec import load_spec, parse_spec
    path = Path(source)
    if path.suffix in (".yaml", ".yml"):
        return load_spec(path, overrides=overrides), None
    import json

    from arspec.checkpoint import read_checkpoint, resolve
    tensors, metadata = read_checkpoint(path)
    spec = parse_spec(metadata["spec"], filename=f"{resolve(path)}#spec", overrides=json.loads(metadata.get("overrides", "[]")) + overrides)
    prefix = "ema." if any(k.startswith("ema.") for k in tensors) else "model."
    return spec, {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def run(args: Any) -> int:
    from arspec import export
    try:
        spec, weights = _spec_and_weights(args.source, args.overrides)
    except (FileNotFoundError, ValueError) as err:
        print(f"arspec export: {err}", file=sys.stderr)
        return 2
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(export(spec, backend=args.backend))
    print(f"wrote {out}: standalone PyTorch ({spec.name}, {spec.ir.parameters:,} parameters); use it with: from {out.stem} import Model")
    if weights is not None:
        from safetensors.torch import save_file
        target = out.with_suffix(".safetensors")
        save_file({k: v.contiguous() for k, v in weights.items()}, str(target))
        print(f"wrote {target}: the trained weights; model.load_state_dict(safetensors.torch.load_file({str(target)!r}))")
    return 0
