"""Several gateway workers sharing the ports (SO_REUSEPORT): spawn them, forward SIGTERM and SIGHUP, end with them."""

from __future__ import annotations

import os
import queue
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping

from embed_launcher.gateway.config import DEFAULT_DRAIN_S
from embed_launcher.gateway.keyuse import WORKER_VAR
from embed_launcher.gateway.metrics import MULTIPROC_VAR
from embed_launcher.reporting.errors import LauncherError

READY_FD_VAR = "EMBED_GATEWAY_READY_FD"
STOP_GRACE_S = 2 * DEFAULT_DRAIN_S  # after a worker crashed the others drain (DEFAULT_DRAIN_S at most), then die


class Workers:
    """The parent of ``count`` workers; ``run()`` returns the exit code.

    Signal handlers only enqueue; the loop dispatches them. SIGHUP (re-read the keys file) is passed
    on to every worker and stops nothing. Any worker exiting on its own ends the whole group with 1,
    so the launcher restarts the gateway as it would a crashed TEI.
    """

    def __init__(self, count: int, environ: Mapping[str, str], say: Callable[[str], None], ready_line: str,
                 spawn: Callable[..., subprocess.Popen[bytes]] = subprocess.Popen) -> None:
        self.count, self.environ, self.say, self.ready_line, self.spawn = count, environ, say, ready_line, spawn
        self.procs: list[subprocess.Popen[bytes]] = []
        self.signals: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.stopping = False

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda signum, _frame: self.signals.put(signum))
        # The workers' metric values (prometheus_client's multiprocess mode): a private directory, new for
        # this group (values left by an earlier one would be added in), removed once every worker is gone.
        shared = tempfile.mkdtemp(prefix="embed-gateway-metrics-")
        try:
            read_fd = self.spawn_workers({MULTIPROC_VAR: shared})
            try:
                return self.loop(read_fd)
            finally:
                os.close(read_fd)
                self.kill_workers()
        finally:
            shutil.rmtree(shared, ignore_errors=True)

    def spawn_workers(self, extra_env: Mapping[str, str] | None = None) -> int:
        """Start every worker; return the read end of their ready pipe.

        A spawn that fails midway (EAGAIN, ENOMEM) kills and reaps the workers already started and
        closes both pipe ends before raising: nothing may outlive a gateway that failed to start.
        """
        read_fd, write_fd = os.pipe()
        env = {**self.environ, **(extra_env or {}), READY_FD_VAR: str(write_fd)}
        argv = [sys.executable, "-m", "embed_launcher.gateway", "--worker"]
        try:
            for index in range(self.count):  # the index names the worker's key-use file (gateway/keyuse.py)
                self.procs.append(self.spawn(argv, env={**env, WORKER_VAR: str(index)}, pass_fds=(write_fd,),
                                             stdin=subprocess.DEVNULL))
        except BaseException:
            os.close(read_fd)
            self.kill_workers()
            raise
        finally:
            os.close(write_fd)
        return read_fd

    def loop(self, read_fd: int) -> int:
        ready, pending = 0, [read_fd]
        while True:
            while not self.signals.empty():
                signum = self.signals.get()
                if signum == signal.SIGHUP:
                    self.forward(signum)
                else:
                    self.handle_stop(signum)
            if pending and select.select(pending, [], [], 0.2)[0]:
                got = os.read(read_fd, 64)
                ready += len(got)
                if not got:
                    pending = []
                elif ready == self.count:
                    self.say(self.ready_line)
            elif not pending:
                time.sleep(0.2)
            done = self.reap()
            if done is not None:
                return done

    def handle_stop(self, signum: int) -> None:
        self.stopping = True
        self.forward(signum)

    def forward(self, signum: int) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    def reap(self) -> int | None:
        """None while all run; the group's exit code once it is over."""
        codes = [proc.poll() for proc in self.procs]
        if self.stopping:
            return None if None in codes else (0 if all(c == 0 for c in codes) else 1)
        crashed = [(i, c) for i, c in enumerate(codes) if c is not None]
        if not crashed:
            return None
        index, code = crashed[0]
        self.stopping = True
        self.handle_stop(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        while any(p.poll() is None for p in self.procs) and time.monotonic() < deadline:
            time.sleep(0.05)
        raise LauncherError(f"Error: gateway worker {index + 1} exited with code {code}; stopping the others")

    def kill_workers(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
