"""Before TEI starts: make sure every enabled model's TEI file set is in the cache (download or verify)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from .config import EMBED, Settings
from .console import Console
from .events import Mailbox
from .modelcache import verify_model
from .models import detect_backend
from .progress import Progress
from .supervisor import Notifier, NullNotifier

EXTEND_EVERY_S = 10.0  # how often systemd hears "still downloading"
EXTEND_BY_S = 60.0


class ExtendingProgress:
    """Wraps a progress sink: while bytes arrive, ask systemd for more start time (EXTEND_TIMEOUT_USEC)."""

    def __init__(self, inner: Progress, notifier: Notifier, clock: Callable[[], float] = time.monotonic) -> None:
        self.inner = inner
        self.notifier = notifier
        self.clock = clock
        self.last = float("-inf")

    def start(self, repo_id: str, total_bytes: int, done_bytes: int) -> None:
        self._extend()
        self.inner.start(repo_id, total_bytes, done_bytes)

    def advance(self, repo_id: str, n_bytes: int) -> None:
        self._extend()
        self.inner.advance(repo_id, n_bytes)

    def finish(self, repo_id: str) -> None:
        self.inner.finish(repo_id)

    def _extend(self) -> None:
        now = self.clock()
        if now - self.last >= EXTEND_EVERY_S:
            self.last = now
            extend = getattr(self.notifier, "extend_timeout", None)
            if extend is not None:
                extend(EXTEND_BY_S)


def missing_notes(settings: Settings, backend: str) -> list[str]:
    """The original's note for each model that is not (completely) cached yet."""
    notes = []
    for s in settings.services:
        if verify_model(settings.data_dir, s.model, s.revision, backend).complete:
            continue
        if s.name == EMBED:
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


def fetch_models(
    settings: Settings,
    environ: Mapping[str, str],
    console: Console,
    notifier: Notifier | None,
    mailbox: Mailbox,
) -> dict[str, str]:
    """Service name -> snapshot directory to give TEI as --model-id (so TEI never downloads).

    Downloads both models concurrently; a stop signal interrupts within about a second
    (DownloadStopped, exit 0) and leaves partial files to resume. In local-only mode nothing
    touches the network: an incomplete model is an error naming the missing files and the fix.
    """
    from .download import PullRequest, pull_models  # heavy (huggingface_hub): only when starting
    from .progress import default_progress

    backend = detect_backend(settings.backend, environ)
    if not settings.local_only:
        notes = missing_notes(settings, backend)
        if notes:
            console.lines(notes)
    requests = [
        PullRequest(s.model, s.revision, kind="model" if s.name == EMBED else "reranker model")
        for s in settings.services
    ]
    results = pull_models(
        requests,
        should_stop=lambda: mailbox.stop_requests > 0,
        cache_dir=settings.data_dir,
        backend=backend,
        token=settings.hf_token,
        local_only=settings.local_only,
        progress=ExtendingProgress(default_progress(console.out), notifier or NullNotifier()),
    )
    for result in results:
        if result.warning:
            console.warn(result.warning)
    return {s.name: str(r.snapshot_dir) for s, r in zip(settings.services, results, strict=True)}
