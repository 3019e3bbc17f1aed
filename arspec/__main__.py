"""`python -m arspec ...` (what torchrun launches)."""
from arspec.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
