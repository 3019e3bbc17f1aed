"""Argument parsing and dispatch. Every command returns an exit code; nothing a user can put in a
spec or on the command line produces a traceback."""
from __future__ import annotations

import sys
from collections.abc import Sequence

from arspec.cli.parser import build_parser

EXIT_OK, EXIT_NOT_AUTOREGRESSIVE, EXIT_INVALID, EXIT_INTERNAL = 0, 1, 2, 3


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from arspec.allocator import tune_allocator
    tune_allocator()                     # the command's own process: freed memory kept for reuse
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
        elif args.command == "distill":
            from arspec.cli.distill import run
        elif args.command == "verify":
            from arspec.cli.verify import run
        elif args.command == "ops":
            from arspec.cli.ops import run
        else:
            from arspec.cli.backends import run
        return run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a last line of defence: a message, never a traceback
        return report_error(args.command, err)


def report_error(command: str, err: Exception) -> int:
    """One line for an error that reached the top: the user's problem (exit 2) or ours (exit 3)."""
    from arspec.backends import BackendError
    from arspec.errors import SpecError, UsageError
    if isinstance(err, SpecError):
        print(str(err), file=sys.stderr)
        return EXIT_INVALID
    if isinstance(err, (BackendError, UsageError)):
        print(f"arspec {command}: {err}", file=sys.stderr)
        return EXIT_INVALID
    kind = type(err).__name__
    if kind in ("DataError", "DistillError"):
        print(f"arspec {command}: {'data error: ' if kind == 'DataError' else ''}{err}", file=sys.stderr)
        return EXIT_INVALID
    if kind in ("CheckpointError", "CacheError"):
        print(f"arspec {command}: {err}", file=sys.stderr)
        return EXIT_INVALID
    print(f"arspec {command}: internal error: {kind}: {err}", file=sys.stderr)
    return EXIT_INTERNAL


if __name__ == "__main__":
    raise SystemExit(main())
