"""Spawning for real (supervision/process.py): what runs in the child between fork and exec."""

from __future__ import annotations

import ctypes
import io
import json
import os
import sys

import pytest

from embed_launcher.reporting.console import Console
from embed_launcher.startup.launcher import is_ready_line
from embed_launcher.supervision.hints import hint_for, says_ort_refused
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


def test_tei_json_lines_are_relayed_verbatim_and_matched_on_their_message() -> None:
    """TEI with --json-output: the console gets each line as it is; the tail (read by the hints) and the
    line hook (the Ready line) get its message, so the launcher understands TEI in either format."""
    lines = [
        '{"timestamp":"2026-12-06T00:00:00.000000Z","level":"WARN","message":"Could not start ORT backend: '
        'model.onnx not found","target":"text_embeddings_backend","filename":"backends/src/lib.rs","line_number":1}',
        '{"timestamp":"2026-12-06T00:00:00.000001Z","level":"INFO","message":"Ready",'
        '"target":"text_embeddings_router::http::server","filename":"router/src/http/server.rs","line_number":1881}',
        "Error: Could not create backend",
        "",
        "Caused by:",
        "    Weights not found",
    ]
    script = "import sys; sys.stdout.write(sys.argv[1])"
    spec = ChildSpec(name="embed", label="E", model="", argv=(sys.executable, "-c", script, "\n".join(lines) + "\n"),
                     env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})  # fmt: skip
    out, seen = io.StringIO(), []
    spawner = Spawner(Console(out, io.StringIO(), colour=False, json=True),
                      on_line=lambda name, text: seen.append(text))
    child = spawner.spawn(spec)
    assert child.popen is not None and child.popen.wait(timeout=30) == 0
    child.wait_output(10)
    relayed = out.getvalue().splitlines()
    assert relayed[:2] == lines[:2]  # TEI's own JSON, verbatim
    wrapped = json.loads(relayed[2])  # TEI's stderr lines are plain text even with --json-output
    assert (wrapped["logger"], wrapped["msg"]) == ("embed", "Error: Could not create backend")
    assert is_ready_line(seen[1])
    assert child.tail[0].startswith("Could not start ORT backend")
    assert says_ort_refused(list(child.tail)) and hint_for(list(child.tail)) is not None
