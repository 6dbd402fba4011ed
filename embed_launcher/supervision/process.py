"""Processes: spawn a child in its own process group, signal the group, reap exits, relay output."""

from __future__ import annotations

import collections
import ctypes
import functools
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Protocol

from embed_launcher.reporting.console import Console, mask_secrets, strip_ansi
from embed_launcher.reporting.logline import message_of
from embed_launcher.supervision.plan import ChildSpec

PR_SET_PDEATHSIG = 1
TAIL_LINES = 20  # kept per child so a failure can show its last words

# Resolved once, here in the parent, never in a preexec_fn: between fork and exec only the forking
# thread exists in the child, and a lock another thread held at fork time (the dynamic loader's
# in dlopen/dlsym, malloc's) stays locked there for ever. dlopen in the child of a threaded
# launcher (relay and probe threads run all the time) can thus hang the spawn.
_prctl = ctypes.CDLL(None, use_errno=True).prctl


class Handle(Protocol):
    """What the supervisor needs from a running child (a real or a fake process)."""

    pid: int
    tail: collections.deque[str]


@dataclass
class ChildProcess:
    """A spawned TEI process: its pid (also its process group id) and its last output lines."""

    pid: int
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=TAIL_LINES))
    relay: threading.Thread | None = field(default=None, repr=False)

    def wait_output(self, timeout_s: float) -> None:
        """Let the relay copy what the child wrote before it exited (its last words explain the exit).

        An exit can be reaped before the relay thread has read the pipe to its end; bounded,
        because a grandchild that keeps the pipe open would hold EOF back.
        """
        if self.relay is not None:
            self.relay.join(timeout_s)


def before_exec(launcher_pid: int, cpus: tuple[int, ...]) -> None:
    """In the child before exec: die with the launcher, and keep to its cores (a CPU replica's share).

    Affinity is set here, not after the spawn, so every thread TEI starts (tokenizers, the backend's
    pool, which sizes itself by the cores it may use) sees only its share.
    """
    die_with_parent(launcher_pid)
    if cpus:
        os.sched_setaffinity(0, cpus)


def die_with_parent(launcher_pid: int) -> None:
    """In the child before exec: get SIGTERM if the launcher dies, even by SIGKILL (bare metal).

    Only async-signal-safe work belongs here (subprocess docs), hence one call of the prctl
    resolved before the fork (``_prctl``: no dlopen here) and one check. The check compares with
    the launcher's own pid, not with 1: as PID 1 (Docker) the launcher *is* pid 1, and a
    reparented child would get another parent (init or a subreaper) anyway.
    """
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != launcher_pid:
        os._exit(1)  # the launcher died before prctl took effect


class Spawner:
    """Starts children for real. Call from the main thread: PDEATHSIG fires when the spawning thread exits."""

    def __init__(self, console: Console, on_line: Callable[[str, str], None] | None = None) -> None:
        self.console = console
        self.on_line = on_line

    def spawn(self, spec: ChildSpec) -> ChildProcess:
        """Start the child in a new process group with its own scrubbed environment."""
        popen = subprocess.Popen(
            spec.argv,
            env=dict(spec.env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # one ordered stream; TEI's Error: lines come on stderr
            process_group=0,
            preexec_fn=functools.partial(before_exec, os.getpid(), spec.cpus),  # noqa: PLW1509 - main thread only
            close_fds=True,
        )
        child = ChildProcess(pid=popen.pid, popen=popen)
        assert popen.stdout is not None
        thread = threading.Thread(
            target=self._relay, args=(spec, popen.stdout, child), name=f"relay-{spec.name}", daemon=True
        )
        child.relay = thread
        thread.start()
        return child

    def _relay(self, spec: ChildSpec, stream: IO[bytes], child: ChildProcess) -> None:
        """Copy the child's output line by line, masked, until it closes its end.

        The console gets the line as it is; the tail (read by the hints) and ``on_line`` (the Ready
        line) get its message, so a TEI writing JSON (--json-output) is understood as one writing text.
        """
        with stream:
            for raw in iter(stream.readline, b""):
                text = mask_secrets(strip_ansi(raw.decode("utf-8", "replace").rstrip("\r\n")), spec.secrets)
                message = message_of(text)
                child.tail.append(message)
                self.console.child(spec.name, text)
                if self.on_line is not None:
                    self.on_line(spec.name, message)

    def signal(self, child: Handle, sig: int) -> None:
        """Send ``sig`` to the child's whole process group (TEI and anything it started)."""
        signal_group(child.pid, sig)


def signal_group(pgid: int, sig: int) -> bool:
    """Signal a process group; False if nothing is left in it."""
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def reap() -> list[tuple[int, int]]:
    """Collect every exited child of this process: (pid, returncode), where -N means killed by signal N.

    We reap with waitpid(-1) because as PID 1 we also inherit orphans. That makes us the only
    owner of exit statuses: nothing may call Popen.wait() (it would see ECHILD and report 0).
    """
    exits = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        exits.append((pid, os.waitstatus_to_exitcode(status)))
    return exits


def describe_exit(returncode: int) -> str:
    """A child's end in words: ``exit 1`` or ``signal SIGKILL (137), possibly out of memory``."""
    if returncode >= 0:
        return f"exit {returncode}"
    sig = -returncode
    try:
        name = signal.Signals(sig).name
    except ValueError:
        name = f"signal {sig}"
    text = f"signal {name} ({128 + sig})"
    if sig == signal.SIGKILL:
        text += ", possibly out of memory"
    elif sig == signal.SIGABRT:
        text += ", TEI panicked"
    return text
