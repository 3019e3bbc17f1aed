"""Argument parsing and dispatch. Every command returns an exit code; nothing a user can put in a
spec or on the command line produces a traceback."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import UnionType
from typing import Literal, Union, get_args, get_origin

EXIT_OK, EXIT_NOT_AUTOREGRESSIVE, EXIT_INVALID, EXIT_INTERNAL = 0, 1, 2, 3


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec field, e.g. --set event.shape=[1,8,8] (repeatable)")


def add_training_flags(p: argparse.ArgumentParser) -> None:
    """One flag per field of the spec's `training` section (its default comes from the spec)."""
    from arspec.spec.models import TrainingSpec
    for name, field in TrainingSpec.model_fields.items():
        if name == "data":
            continue
        flag = "--" + name.replace("_", "-")
        kind = field.annotation
        if get_origin(kind) in (Union, UnionType):         # Optional[X] -> X
            kind = next(a for a in get_args(kind) if a is not type(None))
        if kind is bool:
            p.add_argument(flag, dest=f"training_{name}", action=argparse.BooleanOptionalAction, default=None, help=field.description)
        elif get_origin(kind) is Literal:
            p.add_argument(flag, dest=f"training_{name}", choices=get_args(kind), help=field.description)
        else:
            p.add_argument(flag, dest=f"training_{name}", type=kind, metavar=name.upper(), help=field.description)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arspec", description="A declarative compiler for autoregressive generative models.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check", help="validate specs and prove them autoregressive")
    p.add_argument("specs", nargs="+")
    p.add_argument("--strict", action="store_true", help="warnings (blind spots, dead context) fail the check")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--dynamic", action="store_true", help="also measure the compiled module's dependencies and compare")
    p.add_argument("--backend", default="torch")
    _add_set(p)

    p = sub.add_parser("compile", help="build the module and print a summary")
    p.add_argument("spec")
    p.add_argument("--backend", default="torch")
    p.add_argument("--device", default="cpu")
    p.add_argument("-o", "--output", help="write the initial weights as a checkpoint (.safetensors)")
    _add_set(p)

    p = sub.add_parser("train", help="train a spec on data, with checkpoints")
    p.add_argument("spec")
    p.add_argument("--data", help="dataset name (binarized-mnist, binarized-mnist-5k, mnist, digits, speech, cifar10:PATH, "
                                  "wav:FOLDER) or a .npz file")
    add_training_flags(p)
    p.add_argument("--out", default="runs/latest")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.safetensors")
    p.add_argument("--limit", type=int, help="use at most this many training examples")
    p.add_argument("--backend", default="torch")
    p.add_argument("--quiet", action="store_true")
    _add_set(p)

    p = sub.add_parser("eval", help="NLL in nats and bits/dim on held-out data")
    p.add_argument("checkpoint")
    p.add_argument("--data")
    p.add_argument("--split", default="test", choices=["train", "validation", "test"])
    p.add_argument("--device", default=None)
    p.add_argument("--ensemble", action="store_true", help="average over all mask sets (MADE)")
    p.add_argument("--limit", type=int)

    p = sub.add_parser("sample", help="draw samples: PNG grid for images, WAV for audio")
    p.add_argument("checkpoint")
    p.add_argument("-n", type=int, default=16)
    p.add_argument("-o", "--output", default="samples.png")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--no-cache", action="store_true", help="naive sampling (recompute everything each step)")
    p.add_argument("--label", type=int, help="class label for global conditioning named 'label'")
    p.add_argument("--context", action="append", default=[], metavar="NAME=VALUE", help="global conditioning value")
    p.add_argument("--given", help="complete this data (.npy, .png or .wav); unknown part given by --known")
    p.add_argument("--known", default="top-half", help="which elements of --given are known: top-half, first-half, or a .npy mask")

    p = sub.add_parser("export", help="write a standalone PyTorch file for a spec or a checkpoint")
    p.add_argument("source", help="a spec (.yaml) or a checkpoint (file or training folder)")
    p.add_argument("-o", "--output", default="model.py")
    p.add_argument("--backend", default="torch-codegen", help="a code-generating backend")
    _add_set(p)

    p = sub.add_parser("graph", help="pictures: receptive field of an element and the op graph")
    p.add_argument("spec")
    p.add_argument("-o", "--output", default="graph.png")
    p.add_argument("--element", help="element index, e.g. 0,14,14 (default: the centre)")
    _add_set(p)

    sub.add_parser("schema", help="print the JSON Schema of the spec format")
    sub.add_parser("backends", help="list installed backends")
    sub.add_parser("ops", help="list the ops specs can use (plugins included)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "check":
            from arspec.cli.check import run
        elif args.command == "compile":
            from arspec.cli.compile import run
        elif args.command in ("train",):
            from arspec.cli.train import run
        elif args.command == "eval":
            from arspec.cli.evaluate import run
        elif args.command == "sample":
            from arspec.cli.sample import run
        elif args.command == "graph":
            from arspec.cli.graph import run
        elif args.command == "schema":
            from arspec.spec.schema import schema_json
            sys.stdout.write(schema_json())
            return EXIT_OK
        elif args.command == "export":
            from arspec.cli.export import run
        elif args.command == "ops":
            from arspec.cli.ops import run
        else:
            from arspec.cli.backends import run
        return run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a last line of defence: a message, never a traceback
        from arspec.backends import BackendError
        from arspec.errors import SpecError
        if isinstance(err, SpecError):
            print(str(err), file=sys.stderr)
            return EXIT_INVALID
        if isinstance(err, BackendError):
            print(f"arspec {args.command}: {err}", file=sys.stderr)
            return EXIT_INVALID
        print(f"arspec {args.command}: error: {type(err).__name__}: {err}", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    raise SystemExit(main())
