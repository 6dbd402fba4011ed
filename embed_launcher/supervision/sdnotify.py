"""sd_notify(3) over $NOTIFY_SOCKET: readiness, status, timeout extension and watchdog for systemd."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 1.0  # a wedged listener must not stall the supervisor loop


class Notifier:
    """Speak the systemd notify protocol; every method is a silent no-op without NOTIFY_SOCKET.

    Built from an environ mapping so tests (and the pure parts) never read ``os.environ``::

        notifier = Notifier(os.environ)
        notifier.extend_timeout(120)        # still downloading
        notifier.ready("embed on :8000")    # Type=notify start-up completes
        if notifier.watchdog_interval_s:    # WatchdogSec= is set for us
            notifier.watchdog()             # ... every watchdog_interval_s while healthy
        notifier.stopping()

    The methods never raise: the first send failure is logged at debug level and kept in
    ``failure``; later ones are swallowed quietly. ``send`` says whether a datagram went out.
    """

    def __init__(self, environ: Mapping[str, str], pid: int | None = None) -> None:
        self.address = socket_address(environ.get("NOTIFY_SOCKET", ""))
        self.watchdog_interval_s = watchdog_interval_s(environ, os.getpid() if pid is None else pid)
        self.failure: str | None = None

    @property
    def enabled(self) -> bool:
        """True when there is a socket to notify."""
        return self.address is not None

    def ready(self, status: str | None = None) -> None:
        """Start-up is complete (both services ready)."""
        self.send("READY=1" if status is None else f"READY=1\nSTATUS={one_line(status)}")

    def status(self, text: str) -> None:
        """Free-form status shown by ``systemctl status``."""
        self.send(f"STATUS={one_line(text)}")

    def extend_timeout(self, seconds: float) -> None:
        """Ask for ``seconds`` more before the start (or stop) timeout fires (systemd >= 236)."""
        self.send(f"EXTEND_TIMEOUT_USEC={max(0, int(seconds * 1_000_000))}")

    def stopping(self) -> None:
        """Shutdown has begun."""
        self.send("STOPPING=1")

    def watchdog(self) -> None:
        """Keep-alive; only when systemd set a watchdog for this very process."""
        if self.watchdog_interval_s is not None:
            self.send("WATCHDOG=1")

    def send(self, message: str) -> bool:
        """Send one datagram; record (never raise) a failure."""
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.settimeout(SEND_TIMEOUT_S)
                sock.sendto(message.encode(), self.address)
        except (OSError, ValueError) as exc:
            self._note_failure(f"sd_notify to {self.address!r} failed: {exc}")
            return False
        return True

    def _note_failure(self, reason: str) -> None:
        if self.failure is None:
            log.debug("%s (further sd_notify failures are not logged)", reason)
        self.failure = reason


def socket_address(value: str) -> str | None:
    """NOTIFY_SOCKET as an AF_UNIX address: a path, or '@name' for the abstract namespace."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    return None  # unset, empty, or a transport we do not speak (vsock:...)


def watchdog_interval_s(environ: Mapping[str, str], pid: int) -> float | None:
    """Half of WATCHDOG_USEC, or None when there is no watchdog for ``pid``."""
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    watchdog_pid = environ.get("WATCHDOG_PID", "").strip()
    if watchdog_pid and watchdog_pid != str(pid):
        return None  # the variable was meant for another process (we inherited it)
    return usec / 2 / 1_000_000


def one_line(text: str) -> str:
    """A newline would start a new assignment in the datagram."""
    return " ".join(text.splitlines())
