"""Spawning for real (supervision/process.py): what runs in the child between fork and exec."""

from __future__ import annotations

import ctypes
import io
import os
import sys

import pytest

from embed_launcher.reporting.console import Console
from embed_launcher.supervision.plan import ChildSpec
from embed_launcher.supervision.process import Spawner


def test_the_child_loads_no_library_between_fork_and_exec(monkeypatch: pytest.MonkeyPatch) -> None:
    """prctl is resolved in the parent before any fork: a dlopen() in the child of a threaded parent can
    deadlock on a lock another thread held at fork time. With ctypes.CDLL broken, spawning still works."""

    def no_dlopen(*args: object, **kwargs: object) -> object:
        raise AssertionError("ctypes.CDLL called between fork and exec")

    monkeypatch.setattr(ctypes, "CDLL", no_dlopen)
    spec = ChildSpec(name="t", label="T", model="", argv=(sys.executable, "-c", "print('hello')"),
                     env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})  # fmt: skip
    out = io.StringIO()
    child = Spawner(Console(out, io.StringIO(), colour=False)).spawn(spec)
    assert child.popen is not None and child.popen.wait(timeout=30) == 0
    child.wait_output(10)
    assert list(child.tail) == ["hello"]
