"""Before TEI starts: make sure every enabled model's TEI file set is in the cache (verify or download).

Downloading needs huggingface_hub, which would stay loaded (and resident) in the supervisor for
the life of the server; so the download runs in a short-lived worker process
(``fetch_worker``). The launcher relays stop signals to it and keeps systemd's start timeout
extended while it runs. Local-only mode only reads the cache, in process.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence

from embed_launcher.config.settings import RERANK, Settings
from embed_launcher.models.cache import mark_ort_refused, ort_refused, require_complete, verify_model
from embed_launcher.models.fileset import model_kind, service_backend
from embed_launcher.reporting.console import Console
from embed_launcher.reporting.errors import EXIT_OK, LauncherError
from embed_launcher.supervision.events import Mailbox
from embed_launcher.supervision.hints import hint_for, says_ort_refused
from embed_launcher.supervision.notify import Notifier, NullNotifier
from embed_launcher.supervision.plan import ChildSpec
from embed_launcher.supervision.process import die_with_parent
from embed_launcher.supervision.status import HEARTBEAT_S

EXTEND_EVERY_S = 10.0  # how often systemd hears "still downloading"
EXTEND_BY_S = 60.0
WAIT_TICK_S = 1.0


class StopRequested(LauncherError):
    """A stop signal arrived before the servers started: a clean exit, nothing more to say."""

    def __init__(self) -> None:
        super().__init__("", EXIT_OK)


def service_backends(settings: Settings, backend: str) -> dict[str, str]:
    """Service name -> the weight format its TEI loads: the binary's, unless ORT is ruled out for it
    (its --dtype or --pooling, or an earlier refusal recorded in the cache)."""
    return {
        s.name: service_backend(
            backend,
            setting=settings.backend,
            dtype=s.tei_arg("--dtype"),
            pooling=s.tei_arg("--pooling"),
            ort_refused=ort_refused(settings.data_dir, s.model),
        )
        for s in settings.services
    }


def give_up_advice(settings: Settings, backends: Mapping[str, str]) -> Callable[[ChildSpec, Sequence[str]], str | None]:
    """The supervisor's advice when it gives up on a child; learns when ONNX Runtime refused a model.

    When TEI's ONNX backend could not run the model and candle found no weights to fall back on,
    the refusal is recorded in the cache, so the next start downloads candle's weights instead.
    """

    def advise(spec: ChildSpec, last_lines: Sequence[str]) -> str | None:
        if settings.backend == "auto" and backends.get(spec.name) == "onnx" and says_ort_refused(last_lines):
            try:
                path = mark_ort_refused(settings.data_dir, spec.model)
            except OSError:
                return hint_for(last_lines)
            return (
                f"TEI's ONNX backend could not run {spec.model} and had no other weights to fall back on. "
                f"Recorded in {path}: the next start downloads its safetensors (or PyTorch) weights instead. "
                "Start again (Docker and systemd restart policies do), or set EMBED_BACKEND=candle."
            )
        return hint_for(last_lines)

    return advise


def missing_notes(settings: Settings, backends: Mapping[str, str]) -> list[str]:
    """The original's note for each model that is not (completely) cached yet."""
    notes = []
    for s in settings.services:
        if verify_model(settings.data_dir, s.model, s.revision, backends[s.name]).complete:
            continue
        if s.kind != RERANK:
            notes += [
                f"Note: Model '{s.model}' not found in cache. It will be downloaded",
                "      from HuggingFace on first start. This may take several minutes.",
            ]
        else:
            notes += [
                f"Note: Reranker model '{s.model}' not found in cache. It will be",
                "      downloaded from HuggingFace on first start. This may take several minutes.",
            ]
    return notes


def local_sources(settings: Settings, backends: Mapping[str, str]) -> dict[str, str]:
    """Local-only: every model must be complete in the cache; no network, no huggingface_hub."""
    sources = {}
    for s in settings.services:
        check = require_complete(settings.data_dir, s.model, s.revision, backends[s.name], model_kind(s.kind))
        sources[s.name] = str(check.snapshot_dir)
    return sources


def fetch_models(
    settings: Settings,
    backends: Mapping[str, str],
    environ: Mapping[str, str],
    console: Console,
    notifier: Notifier | None,
    mailbox: Mailbox,
    heartbeat: Callable[[], None] = lambda: None,
) -> dict[str, str]:
    """Service name -> snapshot directory to give TEI as --model-id (so TEI never downloads).

    ``backends`` maps each service to the weight format its TEI loads (service_backends);
    ``heartbeat`` is called every HEARTBEAT_S while the download runs (the live status stays fresh).
    """
    if settings.local_only:
        return local_sources(settings, backends)
    notes = missing_notes(settings, backends)
    if notes:
        console.lines(notes)
    return run_worker(environ, backends, notifier or NullNotifier(), mailbox, heartbeat=heartbeat)


def run_worker(
    environ: Mapping[str, str],
    backends: Mapping[str, str],
    notifier: Notifier,
    mailbox: Mailbox,
    clock: Callable[[], float] = time.monotonic,
    heartbeat: Callable[[], None] = lambda: None,
) -> dict[str, str]:
    """Run the download worker to its end, relaying stop signals; its output is already ours."""
    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "embed_launcher.models.fetch_worker",
                f"--result-fd={write_fd}",
                *(f"--backend={name}={backend}" for name, backend in backends.items()),
            ],
            env=dict(environ),
            stdin=subprocess.DEVNULL,
            pass_fds=(write_fd,),
            # A SIGKILLed launcher must not leave a download running (bare metal; in a container the
            # kernel ends the namespace). One prctl, spawned from the main thread.
            preexec_fn=functools.partial(die_with_parent, os.getpid()),  # noqa: PLW1509
        )
    finally:
        os.close(write_fd)
    with os.fdopen(read_fd, "rb") as results:
        supervise_worker(proc, notifier, mailbox, clock, heartbeat)
        payload = results.read()
    if mailbox.stop_requests:
        raise StopRequested()
    if proc.returncode != 0 or not payload:
        raise LauncherError("", proc.returncode or 1)  # the worker has printed the one-line error
    sources: dict[str, str] = json.loads(payload)
    return sources


def supervise_worker(
    proc: subprocess.Popen[bytes],
    notifier: Notifier,
    mailbox: Mailbox,
    clock: Callable[[], float],
    heartbeat: Callable[[], None] = lambda: None,
) -> None:
    """Wait for the worker: forward each stop signal (a second one kills), keep systemd patient."""
    forwarded, last_extend, last_beat = 0, float("-inf"), clock()
    while proc.poll() is None:
        if mailbox.stop_requests > forwarded:
            forwarded = mailbox.stop_requests
            proc.send_signal(signal.SIGTERM if forwarded == 1 else signal.SIGKILL)
        now = clock()
        if now - last_extend >= EXTEND_EVERY_S:
            last_extend = now
            notifier.extend_timeout(EXTEND_BY_S)
        if now - last_beat >= HEARTBEAT_S:
            last_beat = now
            heartbeat()
        mailbox.wait(WAIT_TICK_S)
