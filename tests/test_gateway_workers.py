"""Several gateway workers (gateway/workers.py): a spawn that fails midway leaves nothing behind."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from typing import Any

import pytest

from embed_launcher.gateway.workers import Workers


def open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


def test_a_worker_that_fails_to_spawn_leaves_no_orphan_and_no_fd() -> None:
    """The second spawn fails (EAGAIN): the first worker is killed and reaped, both pipe ends are closed."""
    started: list[subprocess.Popen[bytes]] = []

    def spawn(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        if started:
            raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], **kwargs)
        started.append(proc)
        return proc

    before = open_fds()
    workers = Workers(2, {}, lambda line: None, "ready", spawn=spawn)
    try:
        with pytest.raises(OSError, match="Resource temporarily unavailable"):
            workers.spawn_workers()
        assert started[0].poll() is not None  # killed and reaped, not left running
        assert open_fds() == before
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
