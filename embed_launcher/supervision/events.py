"""The supervisor's mailbox: signal handlers and helper threads post events; the main loop waits on one pipe."""

from __future__ import annotations

import os
import queue
import select
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType

from embed_launcher.supervision.liveness import Check
from embed_launcher.supervision.reload import Prepared

# Signals that stop the launcher; the first asks for a graceful stop, a second forces it.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
# SIGHUP (systemctl reload, embed_manage --reload) stops nothing: the gateway re-reads the keys file, and the
# launcher re-reads the env file and the models file (a reload: supervisor.py).
RELOAD_SIGNAL = signal.SIGHUP


@dataclass(frozen=True)
class SignalReceived:
    """A signal arrived (stop signals, SIGHUP and SIGCHLD)."""

    signum: int


@dataclass(frozen=True)
class ProbeAnswered:
    """A health check of one process (``generation``) of a child finished."""

    name: str
    generation: int
    check: Check


@dataclass(frozen=True)
class ReadyLogged:
    """A child logged TEI's "Ready" line: worth probing at once."""

    name: str


@dataclass(frozen=True)
class ReloadPrepared:
    """The launcher prepared a reload (or found why it cannot be made)."""

    prepared: Prepared


@dataclass(frozen=True)
class GatewayRouted:
    """The gateway (one worker) applied a configuration generation, or refused it (``refusal``)."""

    generation: int
    refusal: str | None = None


Event = SignalReceived | ProbeAnswered | ReadyLogged | ReloadPrepared | GatewayRouted


class Mailbox:
    """A queue plus a self-pipe so that ``wait`` wakes the moment anything is posted.

    Signal handlers only post (gunicorn's rule: no work in handler context). The pipe is also
    the signal wakeup fd, so a signal that lands on a helper thread still wakes the main loop.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self.stop_requests = 0  # stop signals seen so far, readable before the loop runs
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)

    def post(self, event: Event) -> None:
        """Queue an event and wake the loop; safe from signal handlers and any thread."""
        self._queue.put(event)
        try:
            os.write(self._write_fd, b"\0")
        except (BlockingIOError, OSError):
            pass  # the pipe is full, so the loop is already awake

    def wait(self, timeout_s: float) -> None:
        """Sleep until something is posted or ``timeout_s`` passes."""
        readable, _, _ = select.select([self._read_fd], [], [], max(0.0, timeout_s))
        if readable:
            try:
                while os.read(self._read_fd, 4096):
                    pass
            except BlockingIOError:
                pass

    def drain(self) -> Iterator[Event]:
        """Every event posted so far, oldest first."""
        while True:
            try:
                yield self._queue.get_nowait()
            except queue.Empty:
                return

    def install_signal_handlers(self) -> None:
        """Route stop signals, SIGHUP and SIGCHLD into the mailbox (main thread only)."""

        def handler(signum: int, _frame: FrameType | None) -> None:
            if signum in STOP_SIGNALS:
                self.stop_requests += 1
            self.post(SignalReceived(signum))

        for sig in (*STOP_SIGNALS, RELOAD_SIGNAL, signal.SIGCHLD):
            signal.signal(sig, handler)
        signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
