"""Tests for embed_launcher.supervision.sdnotify against real AF_UNIX datagram sockets."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from embed_launcher.supervision.sdnotify import Notifier, one_line, socket_address, watchdog_interval_s

PID = 4242


class Listener:
    """A NOTIFY_SOCKET stand-in: a bound datagram socket that collects what it receives."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env_value = env_value

    def receive(self) -> bytes:
        """The next datagram (sendto has queued it before returning, so no waiting is needed)."""
        self.sock.settimeout(2.0)
        return self.sock.recv(4096)

    def pending(self) -> list[bytes]:
        """Every datagram queued right now, without blocking."""
        self.sock.setblocking(False)
        received = []
        while True:
            try:
                received.append(self.sock.recv(4096))
            except BlockingIOError:
                return received


@pytest.fixture
def path_listener(tmp_path: Path) -> Iterator[Listener]:
    """A listener bound to a socket file in tmp_path."""
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        yield Listener(sock, path)


@pytest.fixture
def abstract_listener() -> Iterator[Listener]:
    """A listener in the abstract namespace ('@name' in NOTIFY_SOCKET)."""
    name = f"embed-launcher-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        yield Listener(sock, "@" + name)


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda n: n.ready(), b"READY=1"),
        (lambda n: n.ready("embed on :8000"), b"READY=1\nSTATUS=embed on :8000"),
        (lambda n: n.status("downloading\nBAAI/bge-small-en-v1.5"), b"STATUS=downloading BAAI/bge-small-en-v1.5"),
        (lambda n: n.extend_timeout(90), b"EXTEND_TIMEOUT_USEC=90000000"),
        (lambda n: n.extend_timeout(1.5), b"EXTEND_TIMEOUT_USEC=1500000"),
        (lambda n: n.stopping(), b"STOPPING=1"),
        (lambda n: n.watchdog(), b"WATCHDOG=1"),
    ],
)
def test_each_message_reaches_a_socket_file(
    path_listener: Listener, call: Callable[[Notifier], None], expected: bytes
) -> None:
    """Every method sends exactly its sd_notify assignment to a path socket."""
    notifier = Notifier({"NOTIFY_SOCKET": path_listener.env_value, "WATCHDOG_USEC": "60000000"}, pid=PID)
    call(notifier)
    assert path_listener.receive() == expected
    assert path_listener.pending() == []


def test_abstract_socket(abstract_listener: Listener) -> None:
    """'@name' addresses the abstract namespace, as systemd does for user managers."""
    notifier = Notifier({"NOTIFY_SOCKET": abstract_listener.env_value})
    notifier.ready("up")
    notifier.stopping()
    assert abstract_listener.receive() == b"READY=1\nSTATUS=up"
    assert abstract_listener.receive() == b"STOPPING=1"


def test_a_lifecycle_arrives_in_order(path_listener: Listener) -> None:
    """Datagrams keep their order: extend, status, ready, watchdog, stopping."""
    env = {"NOTIFY_SOCKET": path_listener.env_value, "WATCHDOG_USEC": "20000000"}
    notifier = Notifier(env, pid=PID)
    notifier.extend_timeout(30)
    notifier.status("downloading")
    notifier.ready()
    notifier.watchdog()
    notifier.stopping()
    assert path_listener.pending() == [
        b"EXTEND_TIMEOUT_USEC=30000000",
        b"STATUS=downloading",
        b"READY=1",
        b"WATCHDOG=1",
        b"STOPPING=1",
    ]


@pytest.mark.parametrize("value", [None, "", "relative/path", "@", "vsock:2:1234"])
def test_silent_without_a_usable_notify_socket(path_listener: Listener, value: str | None) -> None:
    """Without NOTIFY_SOCKET (or with one we cannot speak to) every call is a quiet no-op."""
    env = {"WATCHDOG_USEC": "60000000"} if value is None else {"NOTIFY_SOCKET": value, "WATCHDOG_USEC": "60000000"}
    notifier = Notifier(env, pid=PID)
    assert notifier.enabled is False
    notifier.ready("x")
    notifier.status("x")
    notifier.extend_timeout(5)
    notifier.watchdog()
    notifier.stopping()
    assert notifier.send("READY=1") is False
    assert notifier.failure is None
    assert path_listener.pending() == []


def test_watchdog_pid_mismatch_disables_the_watchdog(path_listener: Listener) -> None:
    """WATCHDOG_PID naming another process: no interval, and watchdog() sends nothing."""
    env = {"NOTIFY_SOCKET": path_listener.env_value, "WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(PID + 1)}
    notifier = Notifier(env, pid=PID)
    assert notifier.watchdog_interval_s is None
    notifier.watchdog()
    notifier.ready()
    assert path_listener.pending() == [b"READY=1"]


def test_send_reports_success(path_listener: Listener) -> None:
    """send() says True once the datagram is queued at the listener."""
    assert Notifier({"NOTIFY_SOCKET": path_listener.env_value}).send("STATUS=x") is True
    assert path_listener.receive() == b"STATUS=x"


def test_default_pid_is_our_own(path_listener: Listener) -> None:
    """WATCHDOG_PID equal to os.getpid() keeps the watchdog when no pid is passed."""
    env = {"NOTIFY_SOCKET": path_listener.env_value, "WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(env).watchdog_interval_s == 5.0


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "60000000"}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(PID)}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "1000"}, 0.0005),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": ""}, None),
    ],
)
def test_watchdog_interval_is_half_the_timeout(env: dict[str, str], expected: float | None) -> None:
    """watchdog_interval_s = WATCHDOG_USEC / 2 in seconds, None when absent, invalid or not ours."""
    assert watchdog_interval_s(env, PID) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/run/systemd/notify", "/run/systemd/notify"),
        ("@user/notify", "\0user/notify"),
        ("", None),
        ("@", None),
        ("notify", None),
        ("vsock:2:99", None),
    ],
)
def test_socket_address(value: str, expected: str | None) -> None:
    """Absolute paths pass through; '@' maps to a leading NUL; anything else is unsupported."""
    assert socket_address(value) == expected


def test_one_line_flattens_newlines() -> None:
    """A multi-line status cannot inject extra assignments."""
    assert one_line("a\nREADY=1\r\nb") == "a READY=1 b"


def test_send_failure_is_swallowed_and_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A dead socket never raises; the reason is kept and logged at debug level only once."""
    missing = str(tmp_path / "gone.sock")
    notifier = Notifier({"NOTIFY_SOCKET": missing, "WATCHDOG_USEC": "2000000"}, pid=PID)
    with caplog.at_level(logging.DEBUG, logger="embed_launcher.supervision.sdnotify"):
        notifier.ready()
        notifier.watchdog()
        assert notifier.send("STOPPING=1") is False
    assert notifier.failure is not None
    assert notifier.failure.startswith(f"sd_notify to {missing!r} failed: ") and "No such file" in notifier.failure
    assert len([r for r in caplog.records if "sd_notify" in r.getMessage()]) == 1


def test_path_too_long_is_a_failure_not_an_exception() -> None:
    """An address longer than sun_path is reported through `failure`, not raised."""
    notifier = Notifier({"NOTIFY_SOCKET": "/" + "x" * 200})
    notifier.status("x")
    assert notifier.failure == f"sd_notify to {'/' + 'x' * 200!r} failed: AF_UNIX path too long"
