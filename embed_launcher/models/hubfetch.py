"""Fetch single repo files into the HF cache: resumable ``blobs/<etag>.incomplete``, atomic rename, stoppable."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

# huggingface_hub 2.x (pinned >= 2.4) talks through httpx2: its session, timeouts and errors.
import httpx2 as httpx
from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
from huggingface_hub.utils import WeakFileLock, build_hf_headers, get_session, hf_raise_for_status

from embed_launcher.models.progress import Progress

# No telemetry, whatever the environment says: otherwise the user-agent string alone makes
# huggingface_hub fetch /api/agent-harnesses. Read per request, so this holds for every import order.
constants.HF_HUB_DISABLE_TELEMETRY = True

TransportError = httpx.TransportError  # connection refused, reset, cut mid-body, timed out

READ_TIMEOUT_S = 10.0  # a stalled socket read blocks at most this long
METADATA_TIMEOUT_S = 10.0
MAX_IDLE_RETRIES = 3  # consecutive attempts that made no progress before giving up
RETRY_DELAY_S = 1.0


class Stopped(Exception):
    """should_stop() turned true; the partial file stays for the next attempt."""


@dataclass
class FileFetcher:
    """Puts files of one repo commit into ``snapshots/<commit>/`` as links to ``blobs/<etag>``.

    huggingface_hub 2.x deletes its (process-unique) temporary file on any failure, so an
    interrupted download would restart from zero; we keep ``blobs/<etag>.incomplete`` and resume
    it with a Range request, under the same ``.locks/`` lock file huggingface_hub uses.
    """

    cache_dir: Path
    repo_id: str
    commit: str
    endpoint: str
    token: str | bool
    progress: Progress
    should_stop: Callable[[], bool]
    downloaded_bytes: int = 0

    @property
    def repo_dir(self) -> Path:
        return self.cache_dir / ("models--" + self.repo_id.replace("/", "--"))

    def has(self, path: str) -> bool:
        """The file is in the snapshot and its link resolves."""
        return (self.repo_dir / "snapshots" / self.commit / path).is_file()

    def fetch(self, path: str) -> Path:
        """Ensure ``path`` is in the snapshot; download its blob unless already present."""
        pointer = self.repo_dir / "snapshots" / self.commit / path
        if pointer.is_file():
            return pointer
        url = hf_hub_url(self.repo_id, path, revision=self.commit, endpoint=self.endpoint)
        meta = get_hf_file_metadata(url, token=self.token, endpoint=self.endpoint, timeout=METADATA_TIMEOUT_S)
        if not meta.etag:
            raise OSError(f"the Hub sent no ETag for {path}")
        blob = self.repo_dir / "blobs" / meta.etag
        lock = self.cache_dir / ".locks" / self.repo_dir.name / f"{meta.etag}.lock"
        blob.parent.mkdir(parents=True, exist_ok=True)
        lock.parent.mkdir(parents=True, exist_ok=True)
        with WeakFileLock(lock):
            if not blob.is_file():
                self._download(meta.location or url, blob, meta.size)
            _link(blob, pointer)
        return pointer

    def _download(self, url: str, blob: Path, size: int | None) -> None:
        part = blob.with_name(blob.name + ".incomplete")
        headers = build_hf_headers(token=self.token)
        if urlparse(url).netloc != urlparse(self.endpoint).netloc:
            headers.pop("authorization", None)  # signed CDN URLs must not receive the token
        have = _size_of(part)
        if size is not None and have > size:
            part.unlink()
            have = 0
        if have:
            self.progress.advance(self.repo_id, have)  # bytes a previous run already fetched
        idle = 0
        while size is None or have < size:
            try:
                self._stream(url, part, have, headers)
            except TransportError:  # cut, reset or timed out: resume from what arrived
                idle = 0 if _size_of(part) > have else idle + 1
                if idle >= MAX_IDLE_RETRIES:
                    raise
                if idle:  # a cut after progress resumes at once; a dead link gets a breather
                    self._pause(RETRY_DELAY_S)
            else:
                if size is None:
                    break
            have = _size_of(part)
        if size is not None and _size_of(part) != size:
            raise OSError(f"{blob.name}: got {_size_of(part)} bytes, expected {size}")
        os.chmod(part, 0o644)
        os.replace(part, blob)

    def _stream(self, url: str, part: Path, have: int, headers: dict[str, str]) -> None:
        request_headers = {**headers, "Accept-Encoding": "identity"}
        if have:
            request_headers["Range"] = f"bytes={have}-"
        timeout = httpx.Timeout(METADATA_TIMEOUT_S, read=READ_TIMEOUT_S)
        with get_session().stream("GET", url, headers=request_headers, timeout=timeout) as response:
            if response.status_code >= 400:
                response.read()
            hf_raise_for_status(response)
            mode = "ab"
            if have and response.status_code == 200:  # server ignored Range: start over
                mode = "wb"
                self.progress.advance(self.repo_id, -have)
            with part.open(mode) as out:
                for chunk in response.iter_bytes():  # as the network delivers: nothing buffered is lost
                    if self.should_stop():
                        raise Stopped(self.repo_id)
                    out.write(chunk)
                    self.downloaded_bytes += len(chunk)
                    self.progress.advance(self.repo_id, len(chunk))

    def _pause(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.should_stop():
                raise Stopped(self.repo_id)
            time.sleep(0.05)


def _size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _link(blob: Path, pointer: Path) -> None:
    """Relative symlink, as huggingface_hub and TEI's hf-hub write it (replaced atomically)."""
    pointer.parent.mkdir(parents=True, exist_ok=True)
    tmp = pointer.with_name(f".{pointer.name}.{os.getpid()}.link")
    tmp.unlink(missing_ok=True)
    os.symlink(os.path.relpath(blob, pointer.parent), tmp)
    os.replace(tmp, pointer)
