"""The health probe against real sockets: 200 is healthy; 503, refused, garbage and silence are not."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from embed_launcher.supervision.probe import probe_health


@pytest.fixture
def server() -> Iterator[Callable[[bytes | None], int]]:
    """A one-shot TCP server that answers every connection with fixed bytes (None: says nothing)."""
    sockets: list[socket.socket] = []

    def start(reply: bytes | None) -> int:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        sockets.append(listener)

        def serve() -> None:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(1024)
                if reply is not None:
                    conn.sendall(reply)
                else:
                    time.sleep(2)  # a hung server: the probe must give up on its own

        threading.Thread(target=serve, daemon=True).start()
        return int(listener.getsockname()[1])

    yield start
    for s in sockets:
        s.close()


@pytest.mark.parametrize(
    ("reply", "healthy"),
    [
        (b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", True),
        (b"HTTP/1.1 503 Service Unavailable\r\n\r\n{\"error\":\"unhealthy\"}", False),
        (b"HTTP/1.1 401 Unauthorized\r\n\r\n", False),
        (b"garbage 200\r\n", False),
        (b"", False),
    ],
)
def test_only_a_200_status_line_is_healthy(server: Callable[[bytes | None], int], reply: bytes, healthy: bool) -> None:
    """The status code decides; the body is never read."""
    port = server(reply)
    assert probe_health(f"http://127.0.0.1:{port}/health", 2.0) is healthy


def test_refused_connection_is_not_healthy() -> None:
    """Nothing listening (TEI still loading): False at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert probe_health(f"http://127.0.0.1:{port}/health", 2.0) is False


def test_a_silent_server_times_out_within_the_budget(server: Callable[[bytes | None], int]) -> None:
    """A TEI that accepts but never answers: False after about the timeout, not later."""
    port = server(None)
    started = time.monotonic()
    assert probe_health(f"http://127.0.0.1:{port}/health", 0.3) is False
    assert time.monotonic() - started < 1.5
