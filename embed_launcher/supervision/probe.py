"""Health probes over a bare socket: GET /health (three answers), and a few lines of GET /metrics."""

from __future__ import annotations

import socket
import time
import urllib.parse

from embed_launcher.supervision.liveness import Answer, Progress

MAX_STATUS_LINE = 1024
MAX_METRICS_BYTES = 4 << 20  # TEI's /metrics is tens of kB; anything far larger is not TEI's
QUEUE_SIZE = "te_queue_size"
# Counters that move when work completes (TEI's core/src/infer.rs, router/src/http/server.rs).
# Not te_batch_next_size_count: TEI's batching task bumps it on every empty poll of its queue too.
# Not te_request_failure: 429s (overloaded) and validation errors move it with the backend hung,
# so a hung TEI under traffic would look busy for ever.
# Not present at all until the first request (TEI installs its recorder after warm-up): read as 0.
PROGRESS_COUNTERS = (
    "te_request_success",
    "te_request_inference_duration_count",
)


def probe_health(url: str, timeout_s: float) -> bool:
    """True iff ``url`` answers 200 within ``timeout_s``; refused, 503 or a timeout all mean no."""
    return check_health(url, timeout_s) is Answer.OK


def check_health(url: str, timeout_s: float) -> Answer:
    """GET ``url``: OK (200), NOT_READY (another status), FAILING (refused, reset, malformed) or SILENT (no answer).

    TEI binds its port only once the model is loaded, so "connection refused" is the normal
    answer while a child starts (tei-contract §5.2). Only the status line is read. A bare socket
    rather than http.client: that module pulls in ssl and email (~7 MB resident in the
    supervisor for the life of the server) to read one line.
    """
    try:
        status_line = _request(url, timeout_s, until_first_line=True)
    except TimeoutError:
        return Answer.SILENT
    except (OSError, ValueError):
        return Answer.FAILING
    status = _status(status_line)
    if status is None:
        return Answer.FAILING
    return Answer.OK if status == b"200" else Answer.NOT_READY


def read_progress(url: str, timeout_s: float) -> Progress | None:
    """The queue size and progress counters from TEI's ``/metrics``; None when it does not answer 200."""
    try:
        response = _request(url, timeout_s, until_first_line=False)
    except (OSError, ValueError):
        return None
    head, _, body = response.partition(b"\r\n\r\n")
    if _status(head.split(b"\r\n", 1)[0]) != b"200":
        return None
    values = dict.fromkeys((QUEUE_SIZE, *PROGRESS_COUNTERS), 0.0)
    for line in body.split(b"\n"):
        if not line.startswith(b"te_"):
            continue
        name = line.split(b"{", 1)[0].split(b" ", 1)[0].decode("ascii", "replace")
        if name in values:
            try:
                values[name] += float(line.rsplit(b" ", 1)[1])  # summed over labels
            except (IndexError, ValueError):
                continue
    return Progress(values[QUEUE_SIZE], tuple(values[name] for name in PROGRESS_COUNTERS))


def _status(status_line: bytes) -> bytes | None:
    fields = status_line.split()
    return fields[1] if len(fields) >= 2 and fields[0].startswith(b"HTTP/") else None


def _request(url: str, timeout_s: float, *, until_first_line: bool) -> bytes:
    """GET ``url``; return its status line, or the whole response (to EOF, bounded), within the deadline."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    deadline = time.monotonic() + timeout_s
    request = f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n"
    with socket.create_connection((host, parts.port or 80), timeout=timeout_s) as sock:
        sock.sendall(request.encode("ascii"))
        if until_first_line:
            return _read(sock, deadline, MAX_STATUS_LINE, stop_at=b"\r\n").split(b"\r\n", 1)[0]
        return _read(sock, deadline, MAX_METRICS_BYTES, stop_at=None)


def _read(sock: socket.socket, deadline: float, limit: int, stop_at: bytes | None) -> bytes:
    """Bytes until ``stop_at`` is seen, EOF or ``limit``, within the deadline (the whole read, not per recv).

    A connection closed before any byte is a failure (TEI's /health handler panics that way
    when its backend thread is gone); a deadline passed is a TimeoutError (silent).
    """
    data = bytearray()
    while len(data) < limit and (stop_at is None or stop_at not in data):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no answer in time")
        sock.settimeout(remaining)
        chunk = sock.recv(65536)
        if not chunk:
            if not data:
                raise ConnectionResetError("closed without an answer")
            break
        data += chunk
    return bytes(data)
