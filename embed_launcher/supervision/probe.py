"""Health probe: is a TEI server answering GET /health with 200? (a raw socket, short timeouts)."""

from __future__ import annotations

import socket
import time
import urllib.parse

MAX_STATUS_LINE = 1024


def probe_health(url: str, timeout_s: float) -> bool:
    """True iff ``url`` answers 200 within ``timeout_s``; refused, 503 or a timeout all mean no.

    TEI binds its port only once the model is loaded, so "connection refused" is the normal
    answer while a child starts (tei-contract §5.2). Only the status line is read. A bare socket
    rather than http.client: that module pulls in ssl and email (~7 MB resident in the
    supervisor for the life of the server) to read one line.
    """
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    deadline = time.monotonic() + timeout_s
    request = f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n"
    try:
        with socket.create_connection((host, parts.port or 80), timeout=timeout_s) as sock:
            sock.sendall(request.encode("ascii"))
            status_line = _read_line(sock, deadline)
    except (OSError, ValueError):
        return False
    fields = status_line.split()
    return len(fields) >= 2 and fields[0].startswith(b"HTTP/") and fields[1] == b"200"


def _read_line(sock: socket.socket, deadline: float) -> bytes:
    """Bytes up to the first CRLF, within the deadline (whole probe, not per read)."""
    data = b""
    while b"\r\n" not in data and len(data) < MAX_STATUS_LINE:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no status line in time")
        sock.settimeout(remaining)
        chunk = sock.recv(MAX_STATUS_LINE)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0]
