"""Keeping freed memory for reuse (arspec.tune_allocator): in effect on Linux/glibc, once per
process, and left alone when the user says so."""
from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = "import arspec; print(arspec.tune_allocator(), arspec.tune_allocator())"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_allocator_keeps_freed_memory_on_linux_and_says_so_each_time():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "True"]


def test_the_allocator_is_left_alone_when_asked():
    env = {"ARSPEC_ALLOCATOR": "default", "PATH": ""}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, env=env).stdout.split()
    assert out == ["False", "False"]


def test_the_command_line_tunes_its_own_process(monkeypatch):
    from arspec import allocator
    from arspec.cli.main import main
    monkeypatch.setattr(allocator, "_tuned", None)
    calls = []
    monkeypatch.setattr(allocator, "tune_allocator", lambda: calls.append(1) or True)
    assert main(["schema"]) == 0
    assert calls == [1]
