"""Pull TEI's file set of a model into the HF cache under the data dir; map every failure to one line."""

from __future__ import annotations

import errno
import json
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, constants
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from embed_launcher.models.cache import DEFAULT_REVISION, repo_dir, require_complete, verify_model, write_manifest
from embed_launcher.models.fileset import (
    UnusableRepoError,
    dense_paths_from_modules,
    followups,
    select_tei_files,
    shards_from_index,
)
from embed_launcher.models.hubfetch import FileFetcher, Stopped, TransportError
from embed_launcher.models.progress import NullProgress, Progress, human_bytes
from embed_launcher.reporting.errors import LauncherError

HUB_TIMEOUT_S = 10.0
STOP_GRACE_S = 1.0  # how long pull_models waits for its workers after a stop request


@dataclass(frozen=True)
class PullResult:
    """Where TEI finds the model (pass ``snapshot_dir`` as --model-id), and what the pull cost."""

    repo_id: str
    snapshot_dir: Path
    downloaded_bytes: int
    fileset_bytes: int
    from_cache: bool  # the Hub was not asked (local-only) or could not be reached
    warning: str | None = None


@dataclass(frozen=True)
class PullRequest:
    """One model for `pull_models`; ``kind`` words the messages ("model", "reranker model").

    ``backend`` (onnx/candle), when given, overrides the one shared by the whole call.
    """

    repo_id: str
    revision: str | None = None
    kind: str = "model"
    backend: str | None = None


class DownloadStopped(LauncherError):
    """A stop was requested during a download: exit 0, partial files kept for the next run."""

    exit_code = 0


class _HubDown(Exception):
    """The Hub answered 5xx/429 to the listing: treated like no network."""


_UNREACHABLE = (TransportError, OfflineModeIsEnabled, _HubDown)


def disk_free(path: Path) -> int:
    """Free bytes on the file system holding ``path``."""
    return shutil.disk_usage(path).free


def pull_model(
    repo_id: str,
    *,
    cache_dir: Path,
    backend: str,
    revision: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    local_only: bool = False,
    kind: str = "model",
    free_bytes: Callable[[Path], int] = disk_free,
) -> PullResult:
    """Make sure TEI's whole file set for ``backend`` is in one snapshot; download only what is missing.

    Raises `LauncherError` (one line, exit 1) on any failure and `DownloadStopped` (exit 0) once
    ``should_stop()`` is true. ``local_only`` never touches the network. ``token`` is
    EMBED_HF_TOKEN; without it no token is sent (not even one from ``hf auth login``).
    """
    cache_dir = Path(cache_dir)
    if local_only:
        return _from_cache(cache_dir, repo_id, revision, backend, kind)
    hub = (endpoint or constants.ENDPOINT).rstrip("/")
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        return _pull(cache_dir, repo_id, revision, backend, hub, token, progress or NullProgress(),
                     should_stop, free_bytes)
    except Stopped:
        raise _stopped(repo_id) from None
    except _UNREACHABLE as exc:
        return _offline_fallback(cache_dir, repo_id, revision, backend, hub, kind, exc)
    except LauncherError:
        raise
    except Exception as exc:
        raise hub_error(exc, repo_id, revision, hub, token, kind) from None


def _pull(cache_dir: Path, repo_id: str, revision: str | None, backend: str, hub: str, token: str | None,
          progress: Progress, should_stop: Callable[[], bool], free_bytes: Callable[[Path], int]) -> PullResult:
    sizes, commit = _listing(repo_id, revision, hub, token)
    fetcher = FileFetcher(cache_dir, repo_id, commit, hub, token or False, progress, should_stop)
    files = select_tei_files(list(sizes), backend)
    extra: dict[str, tuple[str, ...]] = {}
    for name in followups(files):  # small JSON files that are part of the set anyway
        body = json.loads(fetcher.fetch(name).read_text())
        key = "weight_map_shards" if name.endswith("index.json") else "dense_paths"
        extra[key] = shards_from_index(body) if key == "weight_map_shards" else dense_paths_from_modules(body)
    files = select_tei_files(list(sizes), backend, **extra)
    missing = [f for f in files if not fetcher.has(f)]
    total, needed = sum(sizes[f] for f in files), sum(sizes[f] for f in missing)
    free = free_bytes(cache_dir)
    if needed > free:
        raise disk_error(cache_dir, repo_id, needed, free)
    if missing:
        progress.start(repo_id, total, total - needed)
        completed = False
        try:
            for name in missing:
                if should_stop():
                    raise Stopped(repo_id)
                fetcher.fetch(name)
            completed = True
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise disk_error(cache_dir, repo_id, None, free_bytes(cache_dir)) from None
            raise
        finally:
            progress.finish(repo_id, completed=completed)
    _write_ref(cache_dir, repo_id, revision or DEFAULT_REVISION, commit)
    write_manifest(cache_dir, repo_id, commit, backend, {f: sizes[f] for f in files})
    snapshot = repo_dir(cache_dir, repo_id) / "snapshots" / commit
    return PullResult(repo_id, snapshot, fetcher.downloaded_bytes, total, from_cache=False)


def _listing(repo_id: str, revision: str | None, hub: str, token: str | None) -> tuple[dict[str, int], str]:
    """File names with sizes, and the commit the revision points to (one API call)."""
    try:
        info = HfApi(endpoint=hub, token=token or False).model_info(
            repo_id, revision=revision, files_metadata=True, timeout=HUB_TIMEOUT_S
        )
    except HfHubHTTPError as exc:
        if exc.response.status_code >= 500 or exc.response.status_code == 429:
            raise _HubDown(f"HTTP {exc.response.status_code}") from None
        raise
    if not info.sha or info.siblings is None:
        raise OSError(f"the Hub's answer for {repo_id} lacks the commit or the file list")
    return {s.rfilename: s.size or 0 for s in info.siblings}, info.sha


def _write_ref(cache_dir: Path, repo_id: str, revision: str, commit: str) -> None:
    """refs/<revision> → commit, written last so a half-pulled commit never hides a complete one."""
    if revision == commit:
        return
    ref = repo_dir(cache_dir, repo_id) / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    tmp = ref.with_name(f".{ref.name}.tmp")
    tmp.write_text(commit)
    tmp.replace(ref)


def pull_models(requests: Sequence[PullRequest], *, should_stop: Callable[[], bool] = lambda: False,
                **common: Any) -> list[PullResult]:
    """Pull several models at once, one thread each; the first failure stops the others.

    ``common`` holds `pull_model`'s other keyword arguments (cache_dir, backend, token, ...).
    """
    failed = threading.Event()
    results: dict[int, PullResult] = {}
    errors: dict[int, BaseException] = {}

    def work(i: int, req: PullRequest) -> None:
        try:
            own = {"backend": req.backend} if req.backend else {}
            results[i] = pull_model(req.repo_id, revision=req.revision, kind=req.kind,
                                    should_stop=lambda: failed.is_set() or should_stop(), **{**common, **own})
        except BaseException as exc:
            errors[i] = exc
            if not isinstance(exc, DownloadStopped):
                failed.set()

    threads = [threading.Thread(target=work, args=(i, r), daemon=True, name=f"pull {r.repo_id}")
               for i, r in enumerate(requests)]
    for thread in threads:
        thread.start()
    _join(threads, should_stop)
    real = [errors[i] for i in sorted(errors) if not isinstance(errors[i], DownloadStopped)]
    if real:
        raise real[0]
    if len(results) < len(requests):
        raise _stopped(", ".join(r.repo_id for i, r in enumerate(requests) if i not in results))
    return [results[i] for i in range(len(requests))]


def _join(threads: list[threading.Thread], should_stop: Callable[[], bool]) -> None:
    """Wait for the workers; after a stop request give them STOP_GRACE_S, then leave them (daemons)."""
    deadline: float | None = None
    while any(t.is_alive() for t in threads):
        if deadline is None and should_stop():
            deadline = time.monotonic() + STOP_GRACE_S
        if deadline is not None and time.monotonic() >= deadline:
            return
        for thread in threads:
            thread.join(timeout=0.05)


def _stopped(repo_ids: str) -> DownloadStopped:
    return DownloadStopped(f"Download of {repo_ids} stopped; partial files are kept and it resumes next time.")


def _from_cache(cache_dir: Path, repo_id: str, revision: str | None, backend: str, kind: str) -> PullResult:
    check = require_complete(cache_dir, repo_id, revision, backend, kind)
    assert check.snapshot_dir is not None
    return PullResult(repo_id, check.snapshot_dir, 0, check.size_bytes, from_cache=True)


def _offline_fallback(cache_dir: Path, repo_id: str, revision: str | None, backend: str, hub: str,
                      kind: str, exc: BaseException) -> PullResult:
    check = verify_model(cache_dir, repo_id, revision, backend)
    if check.complete and check.snapshot_dir is not None:
        warning = (f"Warning: cannot reach the Hub at {hub} ({_reason(exc)}); using the cached {kind} "
                   f"'{repo_id}' without checking for updates.")
        return PullResult(repo_id, check.snapshot_dir, 0, check.size_bytes, from_cache=True, warning=warning)
    raise LauncherError(
        f"Error: cannot reach the Hub at {hub} to download {kind} '{repo_id}' ({_reason(exc)}). Check the network "
        f"and HF_ENDPOINT, or pre-pull it where the Hub is reachable (embed_manage --pullmodel {repo_id}) "
        f"and set EMBED_LOCAL_ONLY=true."
    )


def hub_error(exc: BaseException, repo_id: str, revision: str | None, hub: str, token: str | None,
              kind: str = "model") -> LauncherError:
    """Translate a huggingface_hub / OS failure into the one line the user sees."""
    if isinstance(exc, GatedRepoError):
        who = "the token in EMBED_HF_TOKEN has no access" if token else "no token is set (EMBED_HF_TOKEN)"
        return LauncherError(f"Error: {kind} '{repo_id}' is gated and {who}: accept its licence at {hub}/{repo_id} "
                             f"while logged in, then set EMBED_HF_TOKEN to a read token of that account.")
    if isinstance(exc, RevisionNotFoundError):
        return LauncherError(f"Error: revision '{revision or DEFAULT_REVISION}' of {kind} '{repo_id}' was not found "
                             f"on the Hub ({hub}). Check EMBED_REVISION / RERANK_REVISION.")
    if isinstance(exc, RepositoryNotFoundError):
        # The Hub answers anonymous requests for private (and some gated) repos with "not found".
        private = "" if token else " If it is private or gated, set EMBED_HF_TOKEN."
        return LauncherError(f"Error: {kind} '{repo_id}' was not found on the Hub ({hub}). "
                             f"Check the id, e.g. embed_manage --listmodels.{private}")
    if isinstance(exc, HfHubHTTPError) and exc.response.status_code == 401:
        return LauncherError(f"Error: the Hub at {hub} rejected the token in EMBED_HF_TOKEN (401 Unauthorized). "
                             f"Set EMBED_HF_TOKEN to a valid read token, or unset it for public models.")
    if isinstance(exc, RemoteEntryNotFoundError):
        return LauncherError(f"Error: a file of {kind} '{repo_id}' vanished from the Hub ({hub}) during the "
                             f"download. Run the pull again.")
    if isinstance(exc, UnusableRepoError):
        return LauncherError(f"Error: TEI cannot serve {kind} '{repo_id}': {exc}. Choose another model, "
                             f"e.g. embed_manage --listmodels.")
    return LauncherError(f"Error: downloading {kind} '{repo_id}' from {hub} failed: {_reason(exc)}. "
                         f"Run the pull again; it resumes where it stopped.")


def disk_error(cache_dir: Path, repo_id: str, needed: int | None, free: int) -> LauncherError:
    """Not enough space in the data dir: name the path and both numbers."""
    need = f"needs {human_bytes(needed)}" if needed is not None else "ran out of space"
    return LauncherError(f"Error: not enough disk space in {cache_dir} for '{repo_id}': it {need}, "
                         f"{human_bytes(free)} free. Free some space or give the data dir a bigger volume.")


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."
