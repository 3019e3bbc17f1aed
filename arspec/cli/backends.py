"""`arspec backends`: the backends found through the arspec.backends entry-point group."""
from __future__ import annotations

from arspec.backends import available_backends, broken_backends, get_backend


def run(args) -> int:
    for name in available_backends():
        b = get_backend(name)
        print(f"{name}: {b.description} (devices: {', '.join(b.devices)})")
    for name, reason in broken_backends().items():
        print(f"{name}: failed to load, skipped ({reason})")
    if not available_backends():
        print("no backends installed (install one, e.g. pip install -e backends/torch)")
    return 0
