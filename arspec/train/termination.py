"""SIGTERM handled like Ctrl-C while a run trains: a scheduler's preemption (SLURM, Kubernetes,
torchrun's agent) or a plain `kill` saves the exact state to resume from, instead of losing the
steps since the last checkpoint. A process that ignores SIGINT (a background job of a script)
can be stopped the same way."""
from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


class Terminated(KeyboardInterrupt):
    """Raised in the training loop by SIGTERM; a KeyboardInterrupt, so every handler of Ctrl-C
    (the exact-state checkpoint, the lock's release) runs for it too."""


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """While active, SIGTERM raises `Terminated` in the main thread; the previous handler after.
    Elsewhere than the main thread (signals cannot be handled there) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Terminated(f"signal {signum}")
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
