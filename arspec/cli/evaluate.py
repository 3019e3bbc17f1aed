"""`arspec eval`: NLL in nats and bits/dim of a checkpoint on held-out data."""
from __future__ import annotations

import sys

from arspec.data.registry import DataError


def run(args) -> int:
    from arspec.checkpoint import load_model
    from arspec.data import load_data
    from arspec.train import evaluate_nll
    from arspec.train.trainer import bits_per_dim
    try:
        model = load_model(args.checkpoint, device=args.device or "cpu")
    except (FileNotFoundError, ValueError) as err:
        print(f"arspec eval: {err}", file=sys.stderr)
        return 2
    spec = model.spec
    name = args.data or model.checkpoint_meta.get("data")
    try:
        data = load_data(spec, name)
    except DataError as err:
        print(f"arspec eval: data error: {err}", file=sys.stderr)
        return 2
    x = data.split(args.split)
    context = data.context(spec, args.split)
    if args.limit:
        x = x[: args.limit]
        context = {k: v[: args.limit] for k, v in context.items()}
    nats = evaluate_nll(model, x, context, ensemble=args.ensemble)
    elements = model.order.numel()
    ensemble = f", ensemble of {model.num_masks} masks" if args.ensemble and model.num_masks > 1 else ""
    print(f"{spec.name} on {data.name} ({args.split}, {len(x):,} items{ensemble}): "
          f"{nats:.3f} nats per item, {bits_per_dim(nats, elements):.4f} bits/dim")
    return 0
