"""Preflight: refuse to start what cannot work (no TEI binary, a busy port) before spawning anything."""

from __future__ import annotations

import errno
import mmap
import os
import shutil
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import EXIT_CONFIG, LauncherError
from .models import detect_backend

TEI_BINARY = "text-embeddings-router"
TEI_INSTALL_HINT = (
    "Use the embed-launcher Docker image (it ships TEI), install TEI "
    "(https://github.com/huggingface/text-embeddings-inference#local-install), "
    "or set EMBED_TEI_BIN to the binary's path."
)


def resolve_tei_bin(given: str | None, search_path: str) -> str:
    """The TEI binary to run, as an absolute path; a clear exit-2 error if it cannot run."""
    if given and "/" in given:
        path = Path(given)
        if not path.is_file():
            raise LauncherError(
                f"Error: EMBED_TEI_BIN={given} does not exist (TEI would exit 127). {TEI_INSTALL_HINT}", EXIT_CONFIG
            )
        if not os.access(path, os.X_OK):
            raise LauncherError(
                f"Error: EMBED_TEI_BIN={given} is not executable (TEI would exit 126). Fix: chmod +x {given}",
                EXIT_CONFIG,
            )
        return str(path.absolute())
    name = given or TEI_BINARY
    found = shutil.which(name, path=search_path)
    if found is None:
        source = f"EMBED_TEI_BIN={name}" if given else f"TEI binary '{name}'"
        raise LauncherError(f"Error: {source} was not found on PATH. {TEI_INSTALL_HINT}", EXIT_CONFIG)
    return found


ELF_MAGIC = b"\x7fELF"
ORT_MARKER = b"onnxruntime"  # ONNX Runtime's own strings, present in any TEI built with -F ort


def tei_has_ort(tei_bin: str) -> bool | None:
    """Whether the TEI binary contains ONNX Runtime; None when it cannot tell (a wrapper script).

    The binary is memory-mapped and searched, not read: it is 100+ MB with MKL linked in.
    """
    try:
        with open(tei_bin, "rb") as f:
            if f.read(4) != ELF_MAGIC:
                return None
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as image:
                return image.find(ORT_MARKER) != -1
    except (OSError, ValueError):
        return None


def tei_backend(setting: str, tei_bin: str | None, environ: Mapping[str, str]) -> str:
    """The weight format TEI will load (see models.detect_backend), inspecting the binary for "auto"."""
    has_ort = tei_has_ort(tei_bin) if setting == "auto" and tei_bin else None
    return detect_backend(setting, environ, has_ort)


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
