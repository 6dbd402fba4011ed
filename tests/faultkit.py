"""Fault-injection helpers for the integration and PID 1 tests: per-service TEI wrappers, wrapped launcher runs.

    tei = service_tei(tei_dir, embed={"exit_after_s": 1}, first_only={"embed"})
    run = launch({"RERANK_ENABLED": "true"}, tei=tei.path)
    tei.spawns("embed")                     # pids of every embeddings TEI the launcher started

`launch` (conftest) always runs ``python -m embed_launcher`` directly; `wrapped_runs` runs it behind a
prefix such as ``unshare --pid --fork --mount-proc`` with the same environment and the same clean-up.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil
from conftest import FAKE_TEI, LauncherRun, alive, clean_up, free_port

SERVICES = ("embed", "rerank")
PORT_NAMES = ("EMBED_PORT", "RERANK_PORT", "EMBED_PROMETHEUS_PORT", "RERANK_PROMETHEUS_PORT")


@dataclass(frozen=True)
class ServiceTei:
    """A TEI wrapper that gives each service its own FAKE_TEI_* knobs and logs every spawn."""

    path: Path
    spawn_log: Path
    state_dir: Path

    def spawns(self, service: str) -> list[int]:
        """Pids of the ``service`` children started so far, oldest first."""
        if not self.spawn_log.exists():
            return []
        rows = (line.split() for line in self.spawn_log.read_text().splitlines())
        return [int(pid) for name, pid in rows if name == service]

    def signal_state(self, service: str) -> dict[str, int]:
        """SigBlk/SigIgn of the first ``service`` child as exec'd by the launcher (``record_signals``)."""
        text = (self.state_dir / f"signals-{service}").read_text()
        fields = (line.split(":") for line in text.splitlines())
        return {key.strip(): int(value.strip(), 16) for key, value in fields}


def _exports(knobs: Mapping[str, object]) -> str:
    return "".join(f"export FAKE_TEI_{k.upper()}={shlex.quote(str(v))}; " for k, v in knobs.items())


def service_tei(
    directory: Path,
    *,
    common: Mapping[str, object] | None = None,
    embed: Mapping[str, object] | None = None,
    rerank: Mapping[str, object] | None = None,
    first_only: Sequence[str] = (),
    record_signals: bool = False,
) -> ServiceTei:
    """Write a wrapper: ``common`` knobs for both, then the service's own (only on its first spawn if
    the service is in ``first_only``, so a crash happens once and the restart is healthy).

    The service is told apart by the ``--uds-path`` the plan gives each child, not by the model path,
    which lies under a tmp_path named after the test.
    """
    state = directory / f"state-{len(list(directory.glob('state-*')))}"
    state.mkdir()
    spawn_log = state / "spawns.log"
    knobs = {"embed": embed or {}, "rerank": rerank or {}}
    lines = [
        "#!/bin/sh",
        'case "$*" in *text-embeddings-inference-rerank-*) service=rerank ;; *) service=embed ;; esac',
        f'echo "$service $$" >> {shlex.quote(str(spawn_log))}',
    ]
    if record_signals:  # the mask as the launcher handed it over, read with builtins only: a forked
        # grep would race with the shell, which blocks every signal while it waits for a child
        lines.append(
            'while read -r key value; do case "$key" in SigBlk:|SigIgn:) echo "$key $value" ;; esac; done'
            f" < /proc/$$/status > {shlex.quote(str(state))}/signals-$service"
        )
    lines.append(_exports({"load_s": 0.1, **(common or {})}))
    for name in SERVICES:
        if not knobs[name]:
            continue
        if name in first_only:
            marker = shlex.quote(str(state / f"first-{name}"))
            lines.append(f'if [ "$service" = {name} ] && mkdir {marker} 2>/dev/null; then {_exports(knobs[name])}fi')
        else:
            lines.append(f'if [ "$service" = {name} ]; then {_exports(knobs[name])}fi')
    lines.append(f'exec {shlex.quote(sys.executable)} {shlex.quote(str(FAKE_TEI))} "$@"')
    path = directory / f"tei-split-{state.name}"
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o755)
    return ServiceTei(path, spawn_log, state)


def health(port: int, timeout_s: float = 2.0) -> int:
    """GET /health: the status code, 0 when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=timeout_s) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def exited_within(run: LauncherRun, timeout_s: float) -> tuple[int, float]:
    """(exit code, seconds it took from now); fails the test if the launcher is still running then."""
    started = time.monotonic()
    code = run.wait_exit(timeout_s)
    return code, time.monotonic() - started


def stop(run: LauncherRun, sig: int = signal.SIGTERM, within_s: float = 5.0) -> float:
    """Ask the launcher to stop; it must exit 0 within ``within_s``. Returns how long it took."""
    run.signal(sig)
    code, elapsed = exited_within(run, within_s)
    assert code == 0, run.output()[-2000:]
    return elapsed


@contextlib.contextmanager
def killed_afterwards(procs: Sequence[psutil.Process]) -> Iterator[None]:
    """Kill whatever of ``procs`` still runs when the block ends: a failing test leaks nothing
    that `launch` cannot see (orphans whose parent is gone). psutil refuses reused pids."""
    try:
        yield
    finally:
        for proc in alive(list(procs)):
            proc.kill()


def wait_gone(procs: Sequence[psutil.Process], timeout_s: float) -> None:
    """Wait until none of ``procs`` runs (zombies count as gone); name the survivors on failure."""
    deadline = time.monotonic() + timeout_s
    while alive(list(procs)):
        if time.monotonic() >= deadline:
            survivors = []
            for p in alive(list(procs)):
                try:
                    survivors.append(f"{p.pid} {p.status()} ppid={p.ppid()} {' '.join(p.cmdline())[:200]}")
                except psutil.NoSuchProcess:
                    pass
            raise AssertionError(f"still running after {timeout_s} s: {survivors}")
        time.sleep(0.02)


def gone(pids: Sequence[int]) -> bool:
    """Whether none of ``pids`` is running any more (a zombie counts as gone)."""
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    return not alive(procs)


def error_lines(text: str) -> list[str]:
    """The launcher's own error lines (relayed child lines start with their [name] prefix)."""
    return [line for line in text.splitlines() if line.startswith("Error")]


def distinct_ports(count: int) -> list[int]:
    """``count`` different free ports (free_port twice in a row may return the same one)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def launcher_env(
    tmp_path: Path, hub_endpoint: str, tei: Path, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment conftest's `launch` gives the launcher (free ports, scaled-down timings)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "EMBED_DATA_DIR": str(tmp_path / "data"),
        "EMBED_ENV_FILE": str(tmp_path / "embed.env"),
        "EMBED_TEI_BIN": str(tei),
        "EMBED_HOST": "127.0.0.1",
        "EMBED_SERVER_ADDR": "127.0.0.1",
        "HF_ENDPOINT": hub_endpoint,
        "EMBED_DATA_PERSISTENT": "true",
        "EMBED_STOP_TIMEOUT": "3",
        "EMBED_RESTART_DELAY": "0.2",
        "EMBED_READY_TIMEOUT": "20",
        "EMBED_HEALTH_INTERVAL": "0.5",
        **{name: str(port) for name, port in zip(PORT_NAMES, distinct_ports(len(PORT_NAMES)), strict=True)},
    }
    return {**env, **(extra or {})}


def wrapped_runs(tmp_path: Path) -> Iterator[Callable[[Sequence[str], dict[str, str]], LauncherRun]]:
    """Body of a `wrapped` fixture: start the launcher behind a command prefix (unshare ...), then
    kill and check every process, as conftest's `launch` does.

        @pytest.fixture
        def wrapped(tmp_path): yield from wrapped_runs(tmp_path)
    """
    runs: list[LauncherRun] = []

    def start(prefix: Sequence[str], env: dict[str, str]) -> LauncherRun:
        log_path = tmp_path / f"wrapped-{len(runs)}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [*prefix, sys.executable, "-m", "embed_launcher"], env=env, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        run = LauncherRun(proc, log_path, env, Path(env["EMBED_DATA_DIR"]), {k: int(env[k]) for k in PORT_NAMES})
        runs.append(run)
        return run

    yield start
    clean_up(runs)
