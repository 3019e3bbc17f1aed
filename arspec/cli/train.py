"""`arspec train`: train a spec on data; then report test NLL in nats and bits/dim."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any


def run(args: Any) -> int:
    from arspec import load_spec
    from arspec.data import load_data
    from arspec.train import TrainConfig, TrainingError, evaluate_nll, train
    from arspec.train.termination import Terminated
    from arspec.train.trainer import check_output, per_dim_text
    spec = load_spec(args.spec, overrides=args.overrides)
    flags = {k.removeprefix("training_"): v for k, v in vars(args).items() if k.startswith("training_")}
    config = TrainConfig.from_spec(spec, Path(args.out), device=args.device, resume=args.resume, limit=args.limit,
                                   quiet=args.quiet, backend=args.backend, overwrite=args.overwrite, **flags)
    check_output(config)                       # before the data are read: a folder in use, nothing to resume
    if config.log == "tensorboard":
        from arspec.train.tensorboard import require_tensorboard
        require_tensorboard()
    data = load_data(spec, args.data)          # a DataError is reported as "data error: ...", exit 2
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:
        used = min(len(data.train), args.limit) if args.limit else len(data.train)
        limited = f" (--limit; of {len(data.train):,})" if used < len(data.train) else ""
        print(f"training {spec.name} on {data.name}: {used:,} train{limited} / {len(data.validation):,} validation / "
              f"{len(data.test):,} test items -> {config.out}")
    try:
        result = train(spec, data, config)
    except TrainingError as err:
        print(f"arspec train: {err}", file=sys.stderr)
        return 1
    except Terminated:
        return 143                                  # 128 + SIGTERM, as a shell reports a process it killed
    except KeyboardInterrupt:
        return 130
    if rank != 0:
        return 0
    from arspec.checkpoint import load_model
    model = load_model(config.out)
    nats = evaluate_nll(model, data.test, data.context(spec, "test"), estimate=True)
    elements = model.order.numel()
    stop = f" (stopped early: {result['stopped']})" if result["stopped"] else ""
    kind = ("order-agnostic estimate (one random ordering per item; exact: arspec eval, ensembles: --orderings K) "
            if model.agnostic else "")
    if hasattr(model, "elbo"):
        kind = "bound (negative ELBO; importance-weighted: arspec eval --iw K) "
    print(f"test NLL {kind}of the best checkpoint (step {result['best_step']}): {nats:.3f} nats ({per_dim_text(nats, elements, model.distribution.discrete)}) "
          f"after {result['steps']} steps{stop} in {result['seconds']} s; checkpoints in {config.out}")
    return 0
