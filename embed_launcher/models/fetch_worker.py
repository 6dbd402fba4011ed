"""The model download, in a short-lived process of its own, so the supervisor never loads huggingface_hub.

Run by the launcher as ``python -m embed_launcher.models.fetch_worker --result-fd=N --backend=embed=onnx``
(one ``--backend`` per enabled service) with the launcher's environment: it reads the same
settings, pulls every enabled model's TEI file set (progress on its stdout, which is the
launcher's), and writes ``{"embed": "<snapshot dir>", ...}`` as JSON to fd N. SIGTERM/SIGINT stop
the pull within about a second, keeping partial files for next time.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Mapping

from embed_launcher.config.load import load
from embed_launcher.models.download import PullRequest, pull_models
from embed_launcher.models.fileset import model_kind
from embed_launcher.models.progress import PlainProgress, default_progress
from embed_launcher.reporting.console import Console
from embed_launcher.reporting.funnel import line_buffered, run_guarded


def pull_all(result_fd: int, backends: Mapping[str, str], stop: threading.Event, console: Console) -> int:
    """Pull what the settings name, each in its service's weight format; report snapshot dirs on ``result_fd``."""
    settings = load(os.environ, lambda warning: None)  # the launcher has shown the warnings
    console.use_format(settings.log_format)
    requests = [
        PullRequest(s.model, s.revision, kind=model_kind(s.kind), backend=backends[s.name]) for s in settings.services
    ]
    results = pull_models(
        requests,
        should_stop=stop.is_set,
        cache_dir=settings.data_dir,
        token=settings.hf_token,
        progress=PlainProgress(say=console.info) if console.json else default_progress(sys.stdout),
    )
    for result in results:
        if result.warning:
            console.warn(result.warning)
    sources = {s.name: str(r.snapshot_dir) for s, r in zip(settings.services, results, strict=True)}
    os.write(result_fd, json.dumps(sources).encode())
    return 0


def service_and_backend(text: str) -> tuple[str, str]:
    """``embed=onnx`` -> ("embed", "onnx")."""
    name, _, backend = text.partition("=")
    if backend not in ("onnx", "candle"):
        raise argparse.ArgumentTypeError(f"expected SERVICE=onnx|candle, got {text!r}")
    return name, backend


def main(argv: list[str] | None = None) -> int:
    """Entry point of the worker process."""
    parser = argparse.ArgumentParser(prog="embed_launcher.models.fetch_worker")
    parser.add_argument("--result-fd", type=int, required=True)
    parser.add_argument(
        "--backend",
        action="append",
        type=service_and_backend,
        required=True,
        help="SERVICE=onnx|candle, once per enabled service",
    )
    args = parser.parse_args(argv)
    line_buffered()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    console = Console()
    return run_guarded(lambda: pull_all(args.result_fd, dict(args.backend), stop, console), console)


if __name__ == "__main__":
    sys.exit(main())
