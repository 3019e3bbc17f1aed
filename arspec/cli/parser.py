"""The command line's arguments: every command, its options and their types. Argument errors are
one human line (`arspec sample: argument -n: must be at least 1, got 0`) and exit 2. Nothing here
imports more than the standard library and the spec models, so `arspec check` stays light."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import UnionType
from typing import Literal, NoReturn, Union, get_args, get_origin

EXIT_INVALID = 2


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump), exit code 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_INVALID)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def known_elements(text: str) -> str:
    """top-half, first-half, first-frames:K (videos), or an existing .npy boolean mask."""
    if text in ("top-half", "first-half"):
        return text
    if text.startswith("first-frames:"):
        if not text.split(":", 1)[1].isdigit():
            raise argparse.ArgumentTypeError(f"expected first-frames:K with K a number of frames, got {text!r}")
        return text
    if text.endswith(".npy"):
        if not Path(text).is_file():
            raise argparse.ArgumentTypeError(f"no such mask file: {text}")
        return text
    raise argparse.ArgumentTypeError(f"expected top-half, first-half, first-frames:K or a .npy mask file, got {text!r}")


def element_index(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated indices such as 0,14,14 (or t for a sequence), got {text!r}") from None


def context_value(text: str) -> tuple[str, int]:
    name, sep, value = text.partition("=")
    try:
        if not sep or not name:
            raise ValueError
        return name, int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=CLASS such as genre=2, got {text!r}") from None


def byte_size(text: str) -> int:
    from arspec.resources import parse_bytes
    try:
        return parse_bytes(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def existing_file(text: str) -> str:
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return text


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
            kind = positive_int if kind is int and any(getattr(m, "ge", None) == 1 for m in field.metadata) else kind
            p.add_argument(flag, dest=f"training_{name}", type=kind, metavar=name.upper(), help=field.description)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="arspec", description="A declarative compiler for autoregressive generative models.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("check", help="validate specs and prove them autoregressive")
    p.add_argument("specs", nargs="+")
    p.add_argument("--strict", action="store_true", help="warnings (blind spots, dead context) fail the check")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--dynamic", action="store_true", help="also measure the compiled module's dependencies and compare")
    p.add_argument("--max-memory", type=byte_size, metavar="SIZE",
                   help="with --dynamic: bytes one measuring call may use, e.g. 2GB (it stacks perturbed inputs; default 4 GiB)")
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
    p.add_argument("--data", help="dataset name (binarized-mnist, binarized-mnist-5k, python-stdlib, red-wine[:K], text:PATH, mnist, digits, speech, cifar10:PATH, "
                                  "wav:FOLDER) or a .npz file")
    add_training_flags(p)
    p.add_argument("--out", default="runs/latest")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.safetensors")
    p.add_argument("--overwrite", action="store_true", help="start afresh in an OUT that holds a previous run's checkpoints (they are replaced)")
    p.add_argument("--limit", type=positive_int, help="use at most this many training examples")
    p.add_argument("--backend", default="torch")
    p.add_argument("--quiet", action="store_true")
    _add_set(p)

    p = sub.add_parser("eval", help="NLL in nats and bits/dim on held-out data")
    p.add_argument("checkpoint")
    p.add_argument("--data")
    p.add_argument("--split", default="test", choices=["train", "validation", "test"])
    p.add_argument("--device", default=None)
    p.add_argument("--ensemble", action="store_true", help="average over all mask sets (MADE)")
    p.add_argument("--orderings", type=positive_int, metavar="K",
                   help="order-agnostic models: average p over K orderings (the raster one and K-1 random ones)")
    p.add_argument("--iw", type=positive_int, metavar="K",
                   help="latent-variable models (PixelVAE): the importance-weighted NLL with K posterior samples (1: the ELBO)")
    p.add_argument("--limit", type=positive_int, help="evaluate at most this many items")
    p.add_argument("--context", action="append", default=[], type=context_value, metavar="NAME=CLASS",
                   help="a global conditioning value for every item (when the data have none)")
    p.add_argument("--context-file", type=existing_file, help="a .npz with one array per conditioning name, one row per item")
    p.add_argument("--max-memory", type=byte_size, metavar="SIZE",
                   help="bytes one batched evaluation may use, e.g. 4GB (order-agnostic likelihoods stack a pass per step; default 4 GiB)")

    p = sub.add_parser("sample", help="draw samples: .png (images), .npy (raw values), .wav (audio), .txt (tokens)")
    p.add_argument("checkpoint")
    p.add_argument("-n", type=positive_int, default=16, help="how many samples")
    p.add_argument("-o", "--output", default="samples.png", help="the format follows the extension: .png, .gif (videos), .npy, .wav or .txt")
    p.add_argument("--batch-size", type=positive_int, default=256, help="samples drawn together (more are drawn batch by batch, with a progress bar)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--no-cache", action="store_true", help="naive sampling (recompute everything each step)")
    p.add_argument("--temperature", type=positive_float, default=1.0, help="divide the logits by this (1: the model's distribution)")
    p.add_argument("--label", type=int, help="class label for a global conditioning named 'label'")
    p.add_argument("--context", action="append", default=[], type=context_value, metavar="NAME=CLASS", help="a global conditioning value")
    p.add_argument("--context-file", type=existing_file, help="a .npz with one array per conditioning name (one row, or one per sample)")
    p.add_argument("--context-from-data", choices=["train", "validation", "test"], metavar="SPLIT",
                   help="the context of the first -n items of this split of the model's training data (e.g. a speech item's log-mel features)")
    p.add_argument("--given", type=existing_file, help="complete this item (.npy, .png or .wav); the known part is given by --known")
    p.add_argument("--known", type=known_elements, default="top-half", help="top-half, first-half, first-frames:K (a video's first K frames), or a .npy boolean mask of the event's shape")

    p = sub.add_parser("distill", help="train a student of inverse autoregressive flows against a trained teacher (Parallel WaveNet)")
    p.add_argument("teacher", help="the teacher's checkpoint (file or training folder)")
    p.add_argument("spec", help="the student's spec (parts with role: flow, objective: distillation)")
    p.add_argument("--data", help="data name or path (default: the student's training.data)")
    p.add_argument("--steps", type=positive_int, help="optimisation steps (default: the spec's training.steps, else 1000)")
    p.add_argument("--batch-size", type=positive_int, help="items per step (default: the spec's training.batch_size)")
    p.add_argument("--lr", type=positive_float, help="learning rate (default: the spec's training.lr)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/student", help="folder for the checkpoint, WAVs and spectrograms")
    p.add_argument("--device", default=None)
    p.add_argument("--quiet", action="store_true")
    _add_set(p)

    p = sub.add_parser("export", help="write a standalone PyTorch file for a spec or a checkpoint")
    p.add_argument("source", help="a spec (.yaml) or a checkpoint (file or training folder)")
    p.add_argument("-o", "--output", default="model.py")
    p.add_argument("--backend", default="torch-codegen", help="a code-generating backend")
    p.add_argument("--with-fast-sampler", action="store_true", help="also carry the cached samplers (ring buffers, a C step compiled on first use; "
                                                                     "thousands of lines) instead of sampling one pass per step")
    _add_set(p)

    p = sub.add_parser("graph", help="pictures: receptive field of an element and the op graph")
    p.add_argument("spec")
    p.add_argument("-o", "--output", default="graph.png")
    p.add_argument("--element", type=element_index, help="element index in the event's shape, e.g. 0,14,14 or 100 for a sequence (default: a leaking element, else the centre)")
    p.add_argument("--unfold", action="store_true", help="draw every repeat of a repeated block (default: the middle repeats of a block "
                                                         "repeated 4 or more times are one box; a leak's repeat is always drawn)")
    _add_set(p)

    p = sub.add_parser("verify", help="prove a hand-written PyTorch module autoregressive (FILE.py:NAME)")
    p.add_argument("target", help="FILE.py:NAME or package.module:NAME: an nn.Module class, a function returning one, or a module")
    p.add_argument("--event-shape", required=True, help="one item's shape as the module takes it, e.g. 3,32,32 or 16000")
    p.add_argument("--input", default="binary", help="binary (0/1 floats), categorical:K (class indices) or real")
    p.add_argument("--output", help="the output's axes, einops-style: b the batch, k the parameters of an element, the event's "
                                    "axes by name, e.g. \"b (k c) h w\" or \"b t k\" (default: (B, *event) or (B, *event, K))")
    p.add_argument("--event-axes", help="the event's axis names in --event-shape's order, when --output writes them in another")
    p.add_argument("--order", default="raster", help="raster (the flat index), channels-last or rgb (pixels in raster order, channels "
                                                     "within), or a .npy of each element's step (or a permutation of flat indices)")
    p.add_argument("--strict", action="store_true", help="blind spots fail the check (exit 1)")
    p.add_argument("--mode", default="both", choices=["train", "eval", "both"], help="the module's mode(s) to check (default both)")
    p.add_argument("--blind-spots", default="auto", choices=["auto", "none", "sample", "all"],
                   help="look for blind spots in the fields of 64 elements spread over the order (sample), of every element (all), "
                        "or not; auto: sample for events of up to 4,096 elements")
    p.add_argument("--step", metavar="FILE.py:FN", help="an incremental sampler FN(model, x) teacher-forced on x: checked against the full pass")
    p.add_argument("--picture", metavar="PNG", help="draw what the first leaking element (else a middle one) reads")
    p.add_argument("--max-memory", type=byte_size, metavar="SIZE",
                   help="bytes one batched backward may use when computing fields, e.g. 2GB (each field is a float64 row; default 4 GiB)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--seed", type=int, default=0)

    sub.add_parser("schema", help="print the JSON Schema of the spec format")
    sub.add_parser("backends", help="list installed backends")
    sub.add_parser("ops", help="list the ops specs can use (plugins included)")
    return parser
