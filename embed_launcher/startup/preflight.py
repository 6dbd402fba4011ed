"""Preflight: refuse to start what cannot work (no TEI binary, a busy port) before spawning anything."""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from embed_launcher.models.backend import TEI_BINARY
from embed_launcher.reporting.errors import EXIT_CONFIG, LauncherError


def port_in_use(host: str, port: int) -> bool:
    """Whether binding ``host:port`` would fail, tested the way TEI binds (SO_REUSEADDR)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


@dataclass(frozen=True)
class PortOwner:
    """Who listens on a port, as far as this user may see."""

    pid: int
    cmdline: tuple[str, ...]

    @property
    def is_tei(self) -> bool:
        """A TEI process (maybe left over from an earlier, killed launcher)."""
        return any(Path(arg).name.startswith(TEI_BINARY) for arg in self.cmdline)

    def __str__(self) -> str:
        shown = " ".join(self.cmdline)
        return f"pid {self.pid} ({shown if len(shown) <= 120 else shown[:117] + '...'})"


def port_owner(port: int) -> PortOwner | None:
    """The process listening on ``port``, if this user may see it."""
    import psutil  # lazy: only needed when something is wrong

    try:
        for conn in psutil.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return PortOwner(conn.pid, tuple(psutil.Process(conn.pid).cmdline()))
    except (psutil.Error, OSError):
        return None
    return None


def check_ports(
    host: str,
    ports: Sequence[tuple[str, int]],
    *,
    in_use: Callable[[str, int], bool] = port_in_use,
    owner: Callable[[int], PortOwner | None] = port_owner,
) -> None:
    """Every (variable, port) must be free on ``host``; all busy ones are reported at once, exit 2.

    TEI itself notices a busy port only after loading the model, minutes later (tei-contract §3).
    """
    problems = []
    for variable, port in ports:
        if not in_use(host, port):
            continue
        who = owner(port)
        message = f"Error: port {port} ({variable}) on {host} is already in use"
        if who:
            message += f" by {who}"
            if who.is_tei:
                message += f"; it looks like a TEI left over from an earlier start: stop it (kill {who.pid})"
        problems.append(f"{message}. Free the port or set {variable} to another port.")
    if problems:
        raise LauncherError("\n".join(problems), EXIT_CONFIG)


def free_local_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 right now, for the TEIs behind the gateway.

    The kernel picks them (bind to port 0), all held until every one is chosen. Another process
    could take one before TEI binds it; TEI then exits at start and is restarted on the same
    port, which the supervisor reports like any failed start.
    """
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()
