"""The launcher as PID 1 of a fresh PID namespace (`unshare --pid --fork --mount-proc`), as in a container.

PID 1 is special (reliability.md §1.3, §2): the kernel drops signals it has no handler for, even
`kill -TERM 1`; every orphan in the namespace becomes its child and stays a zombie until it reaps;
and whoever reaps with waitpid(-1) must still report its own children's true exit codes.
Skipped where unshare is refused (not root and no user namespaces).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import psutil
import pytest
from conftest import LauncherRun, alive, wait_until
from fake_hub.server import HubStandIn
from faultkit import ServiceTei, exited_within, launcher_env, service_tei, wrapped_runs

pytestmark = pytest.mark.pid1

Wrapped = Callable[[Sequence[str], dict[str, str]], LauncherRun]
NAMESPACE = ["--pid", "--fork", "--mount-proc", "--kill-child"]
EMBED_READY = "Text embeddings server is ready"


@pytest.fixture
def wrapped(tmp_path: Path) -> Iterator[Wrapped]:
    """The launcher behind a command prefix (unshare ...), cleaned up like `launch`."""
    yield from wrapped_runs(tmp_path)


@pytest.fixture(scope="module")
def unshare_prefix() -> list[str]:
    """The unshare command that gives us PID 1 here (plain as root, else in a user namespace), or skip."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare(1) is not installed")
    reasons = []
    for prefix in (["unshare", *NAMESPACE], ["unshare", "--user", "--map-root-user", *NAMESPACE]):
        probe = subprocess.run([*prefix, "sh", "-c", "echo $$"], capture_output=True, text=True, timeout=10)
        if probe.returncode == 0 and probe.stdout.strip() == "1":
            return prefix
        reasons.append(probe.stderr.strip() or f"exit {probe.returncode}")
    pytest.skip(f"cannot create a PID namespace: {'; '.join(reasons)}")


def launcher_pid(run: LauncherRun) -> int:
    """The host pid of the launcher: the process `unshare --fork` started, PID 1 inside."""

    def find() -> int | None:
        for p in psutil.Process(run.proc.pid).children():
            if "embed_launcher" in " ".join(p.cmdline()):
                return p.pid
        return None

    return int(str(wait_until(find, 10)))


def namespace_pid(host_pid: int) -> int:
    """A process's pid as seen inside its innermost PID namespace (NSpid's last field)."""
    for line in Path(f"/proc/{host_pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    raise AssertionError(f"no NSpid line for {host_pid}")


def kill_pid_1(host_pid: int, sig: str, prefix: list[str]) -> None:
    """`kill -SIG 1` from inside the namespace (nsenter), as `docker stop` or a shell in the container does.

    In a user namespace nsenter would need that namespace too, so we signal the host pid instead:
    the same test, because the kernel drops a signal PID 1 has no handler for whoever sends it
    (SIGNAL_UNKILLABLE; only SIGKILL/SIGSTOP from an ancestor namespace are forced through).
    """
    if "--user" in prefix:
        os.kill(host_pid, signal.Signals[f"SIG{sig}"])
        return
    subprocess.run(["nsenter", "--target", str(host_pid), "--pid", "kill", f"-{sig}", "1"], check=True, timeout=10)


def zombies(root: int) -> list[psutil.Process]:
    """Zombie processes anywhere under ``root`` (the unshare process)."""
    found = []
    for p in psutil.Process(root).children(recursive=True):
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.NoSuchProcess:
            pass
    return found


def start(wrapped: Wrapped, prefix: list[str], tmp_path: Path, hub: HubStandIn, tei: ServiceTei) -> LauncherRun:
    return wrapped(prefix, launcher_env(tmp_path, hub.endpoint, tei.path))


@pytest.mark.parametrize("sig", ["TERM", "INT", "QUIT"])
def test_kill_1_stops_everything_cleanly_and_children_get_default_signals(
    wrapped: Wrapped, unshare_prefix: list[str], tmp_path: Path, hub: HubStandIn, sig: str
) -> None:
    """Row 18: `kill -SIG 1` from inside the namespace is a clean stop (exit 0); children start unmasked."""
    signal_log = tmp_path / "signals.log"
    tei = service_tei(tmp_path, common={"signal_log": signal_log}, record_signals=True)
    # A 60 s stop timeout, so "nobody was killed" below shows a clean stop on a loaded machine too.
    run = wrapped(unshare_prefix, {**launcher_env(tmp_path, hub.endpoint, tei.path), "EMBED_STOP_TIMEOUT": "60"})
    run.wait_for(EMBED_READY)
    pid = launcher_pid(run)
    assert namespace_pid(pid) == 1
    assert tei.signal_state("embed") == {"SigBlk": 0, "SigIgn": 0}
    kill_pid_1(pid, sig, unshare_prefix)
    code, _ = exited_within(run, 30)  # well before the stop timeout
    assert code == 0, run.output()
    assert f"Stopping services... (SIG{sig} received)" in run.output()
    assert "killing" not in run.output()  # the child stopped by itself, within the timeout
    assert signal_log.read_text().split() == ["TERM"]


def test_kill_hup_1_stops_nothing_and_a_later_term_still_stops_cleanly(
    wrapped: Wrapped, unshare_prefix: list[str], tmp_path: Path, hub: HubStandIn
) -> None:
    """SIGHUP (`systemctl reload`, `docker kill -s HUP`) is a reload, never a stop, even as PID 1."""
    signal_log = tmp_path / "signals.log"
    tei = service_tei(tmp_path, common={"signal_log": signal_log}, record_signals=True)
    run = wrapped(unshare_prefix, {**launcher_env(tmp_path, hub.endpoint, tei.path), "EMBED_STOP_TIMEOUT": "60"})
    run.wait_for(EMBED_READY)
    pid = launcher_pid(run)
    kill_pid_1(pid, "HUP", unshare_prefix)
    run.wait_for("SIGHUP received: the gateway re-reads the keys file")  # the gateway is on by default
    assert psutil.pid_exists(pid) and "Stopping services" not in run.output()
    kill_pid_1(pid, "TERM", unshare_prefix)
    code, _ = exited_within(run, 30)
    assert code == 0 and "Stopping services... (SIGTERM received)" in run.output(), run.output()
    assert signal_log.read_text().split() == ["TERM"]  # TEI never saw the SIGHUP


def test_orphans_are_reaped_and_true_exit_codes_reported(
    wrapped: Wrapped, unshare_prefix: list[str], tmp_path: Path, hub: HubStandIn
) -> None:
    """Row 17: an orphan reparented to PID 1 is reaped (no zombie stays); TEI's exit 3 is logged as exit 3."""
    knobs = {"orphan_grandchild": 1, "orphan_s": 0.8, "exit_after_s": 1.5, "exit_code": 3}
    tei = service_tei(tmp_path, embed=knobs, first_only=("embed",))
    run = start(wrapped, unshare_prefix, tmp_path, hub, tei)
    run.wait_for(EMBED_READY)
    pid = launcher_pid(run)

    def orphan() -> int | None:
        for p in psutil.Process(pid).children():
            try:
                if p.name() == "sleep":
                    return p.pid
            except psutil.NoSuchProcess:
                pass
        return None

    orphaned = int(str(wait_until(orphan, 5, 0.01)))
    wait_until(lambda: not psutil.pid_exists(orphaned), 5)  # exited, and reaped: not even a zombie
    run.wait_for("Error: Embeddings server exited unexpectedly (exit 3).", 10)
    assert "exit 0" not in run.output()  # the reaper did not steal the status (ECHILD -> 0)
    run.wait_for("Embeddings server is ready again (restart 1).", 10)
    wait_until(lambda: not zombies(run.proc.pid), 3)
    psutil.Process(pid).send_signal(signal.SIGTERM)  # unshare --fork ignores TERM itself and forwards nothing
    assert run.wait_exit(10) == 0


def test_sigkill_of_pid_1_empties_the_namespace(
    wrapped: Wrapped, unshare_prefix: list[str], tmp_path: Path, hub: HubStandIn
) -> None:
    """Row 16 (PID 1): SIGKILL of the launcher -> the kernel ends every process of the namespace, grandchildren too."""
    tei = service_tei(tmp_path, common={"spawn_grandchild": 1})
    env = launcher_env(tmp_path, hub.endpoint, tei.path, {"RERANK_ENABLED": "true"})
    run = wrapped(unshare_prefix, env)
    run.wait_for("Text embeddings & reranking server is ready")
    pid = launcher_pid(run)
    inside = [p for p in run.children() if p.pid != pid]
    assert len(inside) >= 4  # two TEIs and a grandchild of each
    psutil.Process(pid).kill()
    wait_until(lambda: not alive(inside), 3)
    run.wait_exit(5)
