"""`arspec eval`: NLL in nats and bits/dim of a checkpoint on held-out data. A training folder means
its best checkpoint (its last one if the best is damaged, with a note). Context comes from the
data's arrays, or from --context / --context-file when the data have none."""
from __future__ import annotations

import sys
from typing import Any


def run(args: Any) -> int:
    from arspec.checkpoint import load_model
    from arspec.cli.sample import context_from_arguments
    from arspec.data.splits import DataError
    from arspec.errors import UsageError
    from arspec.train import evaluate_nll
    from arspec.train.trainer import per_dim_text
    model = load_model(args.checkpoint, device=args.device or "cpu")
    if args.max_memory:
        model.memory_budget = args.max_memory
        for part in ("decoder", "prior"):
            if getattr(model, part, None) is not None:
                getattr(model, part).memory_budget = args.max_memory
    if hasattr(model, "flows"):
        raise UsageError("a student of flows has no likelihood of given data it can compute in parallel; `arspec distill` reports "
                         "the teacher's NLL of its samples (and bench/sampling.py measures it)")
    if model.checkpoint_note:
        print(f"note: {model.checkpoint_note}", file=sys.stderr)
    spec = model.spec
    data = load_data_for_eval(spec, args.data or model.checkpoint_meta.get("data"), bool(args.context or args.context_file))
    x = data.split(args.split)
    if args.limit:
        x = x[: args.limit]
    if args.context or args.context_file:
        context = context_from_arguments(model, args, len(x))
    else:
        try:
            context = {k: v[: len(x)] for k, v in data.context(spec, args.split).items()}
        except DataError as err:
            raise DataError(f"{err} (or pass --context NAME=CLASS / --context-file)") from None
    if hasattr(model, "elbo"):
        return _report_latent(model, spec, data, x, context, args.iw or model.iw_samples)
    if args.iw:
        raise DataError(f"--iw is for latent-variable models (a spec with parts:); {spec.name} has an exact likelihood")
    if args.orderings and not model.agnostic:
        raise DataError(f"--orderings is for order-agnostic models (ordering: {{type: agnostic}}); {spec.name} has "
                        f"{model.num_masks} mask set(s): average them with --ensemble")
    nats = evaluate_nll(model, x, context, ensemble=args.ensemble, orderings=args.orderings)
    elements = model.order.numel()
    ensemble = f", ensemble of {model.num_masks} masks" if args.ensemble and model.num_masks > 1 else ""
    if args.orderings:
        ensemble = f", ensemble of {args.orderings} orderings" if args.orderings > 1 else ", exact in raster order"
    elif model.agnostic:
        ensemble = ", exact in raster order"
    print(f"{spec.name} ({model.checkpoint_path.name}) on {data.name} ({args.split}, {len(x):,} items{ensemble}): "
          f"{nats:.3f} nats per item, {per_dim_text(nats, elements, model.distribution.discrete)}")
    return 0


def _report_latent(model: Any, spec: Any, data: Any, x: Any, context: Any, iw: int) -> int:
    """A latent-variable model: the bound with its reconstruction and KL terms, and the
    importance-weighted NLL with `iw` samples."""
    from arspec.train.latent import evaluate_latent
    from arspec.train.trainer import per_dim_text
    figures = evaluate_latent(model, x, context, iw=iw)
    elements = model.order.numel()
    print(f"{spec.name} ({model.checkpoint_path.name}) on {data.name} ({len(x):,} items): "
          + figures.text(lambda nats: per_dim_text(nats, elements, model.distribution.discrete)))
    return 0


def load_data_for_eval(spec: Any, name: str | None, context_given: bool) -> Any:
    """The evaluation data; its context check is left for later when context comes from the command line."""
    from arspec.data import load_data
    from arspec.data.registry import check_fits, default_data, load_named
    if not context_given:
        return load_data(spec, name)
    splits = load_named(name or default_data(spec), spec)
    check_fits(spec.model_copy(update={"conditioning": {}}), splits)
    return splits
