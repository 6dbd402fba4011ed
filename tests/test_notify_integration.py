"""systemd's notify protocol end to end: a real datagram socket, a real launcher, real signals."""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import LauncherRun, wait_until

pytestmark = pytest.mark.integration

Launch = Callable[..., LauncherRun]


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[str, Callable[[], list[str]]]]:
    """A bound AF_UNIX datagram socket, as systemd provides; returns its path and a reader."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    received: list[str] = []

    def messages() -> list[str]:
        while True:
            try:
                received.append(sock.recv(4096).decode())
            except BlockingIOError:
                return received

    yield path, messages
    sock.close()


def test_ready_only_when_serving_then_watchdog_then_stopping(
    launch: Launch, notify_socket: tuple[str, Callable[[], list[str]]]
) -> None:
    """EXTEND_TIMEOUT_USEC while downloading, READY=1 after the banner, WATCHDOG=1, STOPPING=1 on SIGTERM."""
    path, messages = notify_socket
    run = launch({"RERANK_ENABLED": "true", "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"})
    run.wait_for("Text embeddings & reranking server is ready")
    wait_until(lambda: any(m.startswith("READY=1") for m in messages()))
    ready_at = next(i for i, m in enumerate(messages()) if m.startswith("READY=1"))
    assert any(m.startswith("EXTEND_TIMEOUT_USEC=") for m in messages()[:ready_at])  # the first download
    assert "STATUS=" in messages()[ready_at]
    wait_until(lambda: messages().count("WATCHDOG=1") >= 2, timeout_s=5)
    run.signal(signal.SIGTERM)
    assert run.wait_exit() == 0
    assert "STOPPING=1" in messages()
    assert sum(m.startswith("READY=1") for m in messages()) == 1


def test_silent_without_notify_socket(launch: Launch, notify_socket: tuple[str, Callable[[], list[str]]]) -> None:
    """No NOTIFY_SOCKET: nothing is sent anywhere (and nothing fails)."""
    _, messages = notify_socket
    run = launch()
    run.wait_for("Text embeddings server is ready")
    run.signal(signal.SIGTERM)
    assert run.wait_exit() == 0
    assert messages() == []
