"""Faults end to end (reliability.md §4): crashes, hangs, stuck stops, floods, full disks, bad input.

Each test drives the real launcher against the TEI and Hub stand-ins with scaled-down timings and
checks what an operator would see: exit code, the one line that explains it, which processes live.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import psutil
import pytest
from conftest import FAKE_TEI, LauncherRun, free_port, make_tei, wait_until
from fake_hub.repos import GRANTED_TOKEN
from fake_hub.server import SEND_CHUNK, HubStandIn
from faultkit import (
    error_lines,
    exited_within,
    gone,
    health,
    killed_afterwards,
    launcher_env,
    service_tei,
    stop,
    wait_gone,
    wrapped_runs,
)

pytestmark = pytest.mark.integration

Launch = Callable[..., LauncherRun]
Wrapped = Callable[[Sequence[str], dict[str, str]], LauncherRun]
BOTH_READY = "Text embeddings & reranking server is ready"
EMBED_READY = "Text embeddings server is ready"
DEFAULT_MODEL = "BAAI/bge-small-en-v1.5"


def services(run: LauncherRun) -> dict[str, dict[str, object]]:
    """The live status the launcher publishes (.status.json), per service."""
    try:
        return dict(json.loads((run.data_dir / ".status.json").read_text())["services"])
    except (OSError, ValueError):
        return {}


def running_again(run: LauncherRun, name: str, restarts: int) -> Callable[[], bool]:
    """A predicate: ``name`` is ready again after ``restarts`` restarts and answers /health."""

    def check() -> bool:
        s = services(run).get(name, {})
        return s.get("state") == "running" and s.get("restarts") == restarts and health(int(str(s["port"]))) == 200

    return check


@pytest.fixture
def wrapped(tmp_path: Path) -> Iterator[Wrapped]:
    """The launcher behind a command prefix (unshare ...), cleaned up like `launch`."""
    yield from wrapped_runs(tmp_path)


@pytest.fixture
def slow_hub() -> Iterator[HubStandIn]:
    """A Hub stand-in of our own whose downloads crawl (a few seconds for the default model)."""
    with HubStandIn(chunk_delay_s=0.25) as hub:
        yield hub


def big_partial_downloads(data: Path) -> list[Path]:
    """Partial blobs past their first 16 KiB chunk: a big file whose download is still under way."""
    found = []
    for part in data.glob("models--*/blobs/*.incomplete"):
        try:
            if part.stat().st_size >= SEND_CHUNK:
                found.append(part)
        except FileNotFoundError:
            pass  # renamed into place between glob and stat
    return found


# -- children that crash, hang or never come up (rows 1, 5, 6, 8, 19, 20) ---------------------------


def test_crash_after_ready_restarts_only_that_child(launch: Launch, tei_dir: Path) -> None:
    """Row 1: exit 1 after ready -> logged, restarted with a new pid, /health back; the reranker keeps its pid."""
    tei = service_tei(tei_dir, embed={"exit_after_s": 1, "exit_code": 1}, first_only=("embed",))
    run = launch({"RERANK_ENABLED": "true"}, tei=tei.path)
    run.wait_for("Error: Embeddings server exited unexpectedly (exit 1).")
    first_embed = tei.spawns("embed")[0]
    wait_until(running_again(run, "embed", 1), 10)
    assert run.child_pid("embed") not in (first_embed, None) and gone([first_embed])
    assert tei.spawns("embed") == [first_embed, run.child_pid("embed")]
    assert tei.spawns("rerank") == [run.child_pid("rerank")]  # same process throughout
    assert services(run)["rerank"]["restarts"] == 0
    assert "Restarting embeddings server in 0.2 s (restart 1)." in run.output()
    stop(run)


@pytest.mark.parametrize(
    "knobs",
    [{"load_s": 30}, {"health_file": "HEALTH"}],
    ids=["still-loading", "alive-but-503"],
)
def test_never_ready_is_killed_at_the_ready_timeout_and_counts_as_a_failed_start(
    launch: Launch, tei_dir: Path, tmp_path: Path, knobs: dict[str, object]
) -> None:
    """Row 5: no /health 200 within EMBED_READY_TIMEOUT -> killed, counted as a failed start, brake applies."""
    if knobs.get("health_file"):
        (tmp_path / "health").write_text("503")
        knobs = {"health_file": tmp_path / "health"}
    tei = service_tei(tei_dir, embed=knobs)
    started = time.monotonic()
    run = launch({"EMBED_READY_TIMEOUT": "0.5", "EMBED_START_RETRIES": "2", "EMBED_RESTART_DELAY": "0.1"}, tei=tei.path)
    assert run.wait_exit(30) == 1  # the tests' default ready timeout (20 s, twice) would not be done by then
    elapsed = time.monotonic() - started
    out = run.output()
    assert out.count("Error: Embeddings server did not become ready within 0.5 seconds.") == 2
    assert out.count("Error: Embeddings server failed to start (killed by the launcher with SIGKILL).") == 2
    assert "failed to start 2 times in a row; giving up." in out
    assert elapsed >= 1.0, elapsed  # two whole 0.5 s windows were waited (the messages name the 0.5 s used)
    assert len(tei.spawns("embed")) == 2 and gone(tei.spawns("embed"))


def test_exit_before_ready_counts_at_once(launch: Launch, tei_dir: Path) -> None:
    """Row 6: a TEI that dies while starting is a failed start at once, not after the ready timeout."""
    tei = service_tei(tei_dir, embed={"fail_start": 3})
    run = launch({"EMBED_READY_TIMEOUT": "600", "EMBED_START_RETRIES": "2", "EMBED_RESTART_DELAY": "0.1"},
                 tei=tei.path)
    assert run.wait_exit(60) == 1  # far below the 600 s ready timeout: not waited for
    out = run.output()
    assert out.count("Error: Embeddings server failed to start (exit 3).") == 2
    assert "did not become ready" not in out
    last_words = out.split("Last output of the embeddings server:")[1]
    assert "Error: Model backend is not healthy" in last_words


def test_port_taken_after_preflight_is_a_failed_start_and_the_brake_applies(launch: Launch, tei_dir: Path) -> None:
    """Row 8: the port is grabbed while TEI loads -> TEI's bind error, counted as a failed start, then give up."""
    tei = service_tei(tei_dir, embed={"load_s": 0.8})
    # TEI direct: TEI binds the public port itself (behind the gateway, the gateway owns it)
    run = launch({"EMBED_START_RETRIES": "2", "EMBED_RESTART_DELAY": "0.1", "EMBED_GATEWAY": "false"}, tei=tei.path)
    port = run.ports["EMBED_PORT"]
    run.wait_for("[embed] ")  # the preflight passed and TEI is loading
    with socket.socket() as thief:
        thief.bind(("127.0.0.1", port))
        thief.listen()
        assert run.wait_exit(20) == 1
    out = run.output()
    assert f"Could not bind TCP Listener on 127.0.0.1:{port}" in out
    assert out.count("Error: Embeddings server failed to start (exit 1).") == 2
    assert "failed to start 2 times in a row; giving up." in out


def test_liveness_failures_restart_that_child_only(launch: Launch, tei_dir: Path, tmp_path: Path) -> None:
    """Row 19: /health turns 503 after ready -> after EMBED_HEALTH_FAILURES checks that child is restarted."""
    flag = tmp_path / "embed-health"
    tei = service_tei(tei_dir, embed={"health_file": flag})
    env = {"RERANK_ENABLED": "true", "EMBED_HEALTH_INTERVAL": "0.2", "EMBED_HEALTH_FAILURES": "2"}
    run = launch(env, tei=tei.path)
    run.wait_for(BOTH_READY)
    embed_pid, rerank_pid = run.child_pid("embed"), run.child_pid("rerank")
    flag.write_text("503")
    run.wait_for("Error: Embeddings server failed 2 health checks in a row; restarting it.", 10)
    flag.unlink()
    wait_until(running_again(run, "embed", 1), 10)
    assert run.child_pid("embed") != embed_pid and gone([embed_pid])
    assert run.child_pid("rerank") == rerank_pid and tei.spawns("rerank") == [rerank_pid]
    assert "(killed by the launcher with SIGKILL)" in run.output()
    assert "possibly out of memory" not in run.output()  # we killed it ourselves: no OOM hint
    stop(run)


def test_both_children_crashing_are_both_restarted_once(launch: Launch, tei_dir: Path) -> None:
    """Row 20: both crash -> each restarted exactly once (independent backoff, no double spawn)."""
    crash = {"exit_after_s": 1, "exit_code": 1}
    tei = service_tei(tei_dir, embed=crash, rerank=crash, first_only=("embed", "rerank"))
    run = launch({"RERANK_ENABLED": "true"}, tei=tei.path)
    run.wait_for("Error: Embeddings server exited unexpectedly (exit 1).")
    run.wait_for("Error: Reranker server exited unexpectedly (exit 1).")
    wait_until(running_again(run, "embed", 1), 10)
    wait_until(running_again(run, "rerank", 1), 10)
    assert len(tei.spawns("embed")) == 2 and len(tei.spawns("rerank")) == 2
    stop(run)


def test_flooding_child_keeps_answering_and_the_launcher_keeps_up(launch: Launch, tei_dir: Path) -> None:
    """Row 21: 20 MB of log lines are relayed as they come; TEI never blocks; the stop stays prompt."""
    tei = service_tei(tei_dir, embed={"spew_bytes": 20_000_000})
    run = launch(tei=tei.path)
    run.wait_for(EMBED_READY)
    port = run.ports["EMBED_PORT"]
    for _ in range(5):  # while the flood is on
        assert health(port, timeout_s=30) == 200
    wait_until(lambda: run.log_path.stat().st_size >= 20_000_000, 30, 0.1)
    assert health(port, timeout_s=30) == 200
    stop(run, within_s=30)
    assert "killing" not in run.output()  # TEI stopped by itself on TERM: the flood held nothing up


# -- stopping (rows 10, 12, 14, 15, 16) ------------------------------------------------------------


def test_sigterm_during_download_stops_at_once_and_the_next_start_resumes(
    launch: Launch, tei_dir: Path, slow_hub: HubStandIn
) -> None:
    """Row 10: SIGTERM mid-download -> exit 0 without finishing it, no TEI started, .incomplete kept; next start
    resumes."""
    tei = service_tei(tei_dir)
    run = launch({"HF_ENDPOINT": slow_hub.endpoint}, tei=tei.path)
    wait_until(lambda: big_partial_downloads(run.data_dir), 15)
    slow_hub.chunk_delay_s = 60.0  # the rest now takes hours: an exit within the deadline did not wait for it
    run.signal(signal.SIGTERM)
    code, _ = exited_within(run, 30)
    assert code == 0
    assert tei.spawns("embed") == [] and "[embed]" not in run.output()
    assert "partial files are kept" in run.output()
    assert big_partial_downloads(run.data_dir)
    slow_hub.chunk_delay_s = 0.0
    slow_hub.clear_log()
    second = launch({"HF_ENDPOINT": slow_hub.endpoint}, tei=tei.path)
    second.wait_for(EMBED_READY)
    assert any(a.range for a in slow_hub.log if a.method == "GET"), "the partial file was not resumed"
    assert not list(run.data_dir.glob("models--*/blobs/*.incomplete"))
    stop(second)


def test_sigterm_while_serving_terms_both_children_and_restarts_nothing(
    launch: Launch, tei_dir: Path, tmp_path: Path
) -> None:
    """Row 11: SIGTERM -> each TEI gets TERM once and exits by itself; nothing respawned; exit 0 well in time."""
    signal_log = tmp_path / "signals.log"
    tei = service_tei(tei_dir, common={"signal_log": signal_log})
    run = launch({"RERANK_ENABLED": "true", "EMBED_STOP_TIMEOUT": "60"}, tei=tei.path)
    run.wait_for(BOTH_READY)
    stop(run, within_s=30)  # well before the 60 s stop timeout: nobody had to be killed
    assert sorted(signal_log.read_text().split()) == ["TERM", "TERM"]
    assert len(tei.spawns("embed")) == 1 and len(tei.spawns("rerank")) == 1
    assert "killing" not in run.output() and "exited unexpectedly" not in run.output()


def test_sigterm_during_backoff_cancels_the_restart(launch: Launch, tei_dir: Path) -> None:
    """Row 13: a stop signal while a crashed child waits for its restart -> exit 0 now, nothing spawned."""
    tei = service_tei(tei_dir, embed={"exit_after_s": 0.2, "exit_code": 1})
    run = launch({"EMBED_RESTART_DELAY": "600", "EMBED_RESTART_MAX_DELAY": "600"}, tei=tei.path)
    run.wait_for("Restarting embeddings server in 600 s (restart 1).")
    stop(run, within_s=30)  # not 600 s: the pending restart is dropped, not awaited
    assert len(tei.spawns("embed")) == 1


def test_second_sigint_kills_a_child_that_ignores_term(launch: Launch, tei_dir: Path) -> None:
    """Row 12: INT then INT again while a child ignores TERM -> killed at once, not at the stop timeout, exit != 0."""
    tei = service_tei(tei_dir, embed={"ignore_term": 1})
    run = launch({"EMBED_STOP_TIMEOUT": "600", "EMBED_GATEWAY": "false"}, tei=tei.path)  # TEI, the gateway for /metrics
    run.wait_for(EMBED_READY)
    child = run.child_pid("embed")
    run.signal(signal.SIGINT)
    run.wait_for("Stopping services... (SIGINT received)")
    run.signal(signal.SIGINT)
    code = run.wait_exit(30)  # not the 600 s stop timeout: killed at once
    assert code != 0
    # TEI ignores TERM; the gateway (for /metrics) may have stopped already at the first signal, or not yet
    assert re.search(r"second signal \(SIGINT\) during shutdown; killing embeddings(, gateway)? now\.", run.output())
    assert gone([child])


def test_child_ignoring_sigterm_is_killed_at_the_stop_timeout(launch: Launch, tei_dir: Path) -> None:
    """Row 14: a child that ignores TERM is SIGKILLed when EMBED_STOP_TIMEOUT runs out, not later."""
    tei = service_tei(tei_dir, embed={"ignore_term": 1})
    run = launch({"EMBED_STOP_TIMEOUT": "1"}, tei=tei.path)
    run.wait_for(EMBED_READY)
    child = run.child_pid("embed")
    run.signal(signal.SIGTERM)
    code, elapsed = exited_within(run, 30)  # a launcher that waited for the child would never get here
    assert code == 0
    assert elapsed >= 0.9, elapsed  # the timeout was waited out (benchmarks/launcher_bench.py times stops)
    assert "stop timeout (1 s) reached; killing embeddings now." in run.output()
    assert gone([child])


def grandchild_of(pid_file: Path, other_than: int = 0) -> int:
    """The pid the TEI stand-in wrote for its grandchild (a new one: not ``other_than``)."""

    def read() -> int:
        text = pid_file.read_text().strip() if pid_file.exists() else ""
        return int(text) if text and int(text) != other_than else 0

    return int(str(wait_until(read, 10)))


def test_grandchildren_are_gone_after_stop(launch: Launch, tei_dir: Path, tmp_path: Path) -> None:
    """Row 15: SIGTERM reaches TEI's whole process group: no grandchild outlives the launcher."""
    pid_file = tmp_path / "grandchild.pid"
    tei = service_tei(tei_dir, embed={"spawn_grandchild": 1, "grandchild_pid_file": pid_file})
    run = launch(tei=tei.path)
    run.wait_for(EMBED_READY)
    grandchild = grandchild_of(pid_file)
    assert psutil.Process(grandchild).ppid() == run.child_pid("embed")
    with killed_afterwards([psutil.Process(grandchild)]):
        stop(run)
        wait_until(lambda: gone([grandchild]), 30)  # a survivor would live its 600 s


def test_grandchildren_of_a_crashed_child_are_killed(launch: Launch, tei_dir: Path, tmp_path: Path) -> None:
    """Row 15 on a crash: when TEI dies, what it started dies with it before the restart."""
    pid_file = tmp_path / "grandchild.pid"
    tei = service_tei(tei_dir, embed={"spawn_grandchild": 1, "grandchild_pid_file": pid_file})
    run = launch(tei=tei.path)
    run.wait_for(EMBED_READY)
    grandchild = grandchild_of(pid_file)
    with killed_afterwards([psutil.Process(grandchild)]):
        psutil.Process(run.child_pid("embed")).kill()
        run.wait_for("Error: Embeddings server exited unexpectedly")
        wait_until(lambda: gone([grandchild]), 30)
    wait_until(running_again(run, "embed", 1), 10)
    second = grandchild_of(pid_file, other_than=grandchild)
    with killed_afterwards([psutil.Process(second)]):
        stop(run)
        wait_until(lambda: gone([second]), 30)


@pytest.mark.parametrize("when", ["serving", "loading"])
def test_sigkill_of_the_launcher_takes_its_children_along(launch: Launch, tei_dir: Path, when: str) -> None:
    """Row 16 (bare metal): the launcher SIGKILLed -> PDEATHSIG ends every child (promised within 3 s)."""
    tei = service_tei(tei_dir, common={"load_s": 0.1 if when == "serving" else 30})
    run = launch({"RERANK_ENABLED": "true"}, tei=tei.path)
    if when == "serving":
        run.wait_for(BOTH_READY)
    else:
        wait_until(lambda: len(tei.spawns("embed")) + len(tei.spawns("rerank")) == 2, 15)
        wait_until(lambda: len(run.children()) >= 2, 5)
    children = run.children()
    assert {c.pid for c in children} >= set(tei.spawns("embed") + tei.spawns("rerank"))
    run.signal(signal.SIGKILL)
    run.wait_exit(30)
    # Orphaned children would live on (a loading one for its 30 s load, a serving one for ever): a generous
    # deadline tells them apart from PDEATHSIG's stop without timing it on a loaded machine.
    with killed_afterwards(children):
        wait_gone(children, 30)


def test_sigkill_of_the_launcher_during_download_takes_the_worker_along(
    launch: Launch, tei_dir: Path, slow_hub: HubStandIn
) -> None:
    """Row 16 while downloading: the download worker does not outlive a SIGKILLed launcher."""
    slow_hub.chunk_delay_s = 0.6
    run = launch({"HF_ENDPOINT": slow_hub.endpoint}, tei=service_tei(tei_dir).path)
    wait_until(lambda: big_partial_downloads(run.data_dir), 15)
    workers = run.children()
    assert workers, "no download worker found"
    slow_hub.chunk_delay_s = 60.0  # the rest now takes hours: a worker that outlived the launcher would still run
    run.signal(signal.SIGKILL)
    run.wait_exit(30)
    with killed_afterwards(workers):
        wait_gone(workers, 30)


# -- the outside world: ports, hub, disk, files (rows 9, 22, 23, 24, 27, 28, 29) --------------------


@pytest.fixture
def stale_tei(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A TEI left over from an earlier, killed launcher: serving on a port, named like the real binary."""
    binary = tmp_path / "old" / "text-embeddings-router"
    binary.parent.mkdir()
    binary.symlink_to(FAKE_TEI)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(binary), "--model-id", DEFAULT_MODEL, "--port", str(port),
         "--prometheus-port", str(free_port()), "--hostname", "127.0.0.1",
         "--huggingface-hub-cache", str(tmp_path / "old")],
        env={"PATH": os.environ["PATH"], "FAKE_TEI_LOAD_S": "0", "NO_COLOR": "1"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until(lambda: health(port) == 200, 10)
        yield proc, port
    finally:
        proc.kill()
        proc.wait(5)


def test_stale_tei_on_the_port_is_named_as_a_leftover(
    launch: Launch, tei_dir: Path, stale_tei: tuple[subprocess.Popen[bytes], int]
) -> None:
    """Row 9: a leftover TEI holds EMBED_PORT -> exit 2 naming its pid and calling it a leftover TEI."""
    stale, port = stale_tei
    run = launch({"EMBED_PORT": str(port)}, tei=make_tei(tei_dir))
    assert run.wait_exit(15) == 2
    out = run.output()
    assert f"port {port} (EMBED_PORT)" in out
    assert f"pid {stale.pid} (" in out
    assert "it looks like a TEI left over from an earlier start" in out
    assert "[embed]" not in out
    assert stale.poll() is None  # reported, not killed


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"EMBED_MODEL": "example/does-not-exist"}, "model 'example/does-not-exist' was not found on the Hub"),
        ({"EMBED_MODEL": "example/gated-embedder"}, "is gated and no token is set (EMBED_HF_TOKEN)"),
        ({"EMBED_HF_TOKEN": "hf_unknown_token"}, "rejected the token in EMBED_HF_TOKEN (401 Unauthorized)"),
    ],
    ids=["unknown-model", "gated-no-token", "bad-token"],
)
def test_hub_errors_are_one_line_and_start_nothing(
    launch: Launch, tei_dir: Path, env: dict[str, str], message: str
) -> None:
    """Row 23: a Hub refusal -> exit 1 with one actionable line, no traceback, no TEI started."""
    tei = service_tei(tei_dir)
    run = launch(env, tei=tei.path)
    assert run.wait_exit(20) == 1
    out = run.output()
    assert [line for line in error_lines(out) if message in line] == error_lines(out), out
    assert len(error_lines(out)) == 1 and "Traceback" not in out
    assert tei.spawns("embed") == [] and "[embed]" not in out
    assert GRANTED_TOKEN not in out


def test_malformed_env_file_names_file_and_line(launch: Launch, tmp_path: Path) -> None:
    """Row 24: a line that is not KEY=value -> exit 2 naming the env file and the line number."""
    run = launch(env_file_text="# settings\nEMBED_PORT=8000\nthis is not valid\nRERANK_ENABLED=false\n")
    assert run.wait_exit(10) == 2
    out = run.output()
    assert f"EMBED_ENV_FILE {tmp_path / 'embed.env'} line 3" in out
    assert "Traceback" not in out and "[embed]" not in out


def test_unwritable_data_dir_is_a_configuration_error(launch: Launch, tmp_path: Path) -> None:
    """Row 27: a data dir that cannot be created (a path under a regular file) -> exit 2 naming it."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    data = blocker / "data"
    run = launch(data_dir=data)
    assert run.wait_exit(10) == 2
    out = run.output()
    assert f"Error: data directory {data} is not writable" in out and "EMBED_DATA_DIR" in out
    assert "Traceback" not in out and "[embed]" not in out


@pytest.mark.parametrize(
    ("mode", "owner", "warning"),
    [
        (0o644, None, "Warning: {path} was accessible by other users (mode 0644); tightened to 0600."),
        (0o600, 65534, "Warning: {path} is owned by uid 65534, not by the launcher's user"),
    ],
    ids=["mode-0644", "foreign-owner"],
)
def test_key_file_that_others_could_read_is_warned_about(
    launch: Launch, tmp_path: Path, mode: int, owner: int | None, warning: str
) -> None:
    """Row 28: a loose .api_key is tightened to 0600, a foreign one named; the warning never shows the key."""
    data = tmp_path / "data"
    data.mkdir()
    key_file = data / ".api_key"
    key_file.write_text("loose-key-0123456789")
    key_file.chmod(mode)
    if owner is not None:
        if os.geteuid() != 0:
            pytest.skip("only root can give the key file to another user")
        os.chown(key_file, owner, -1)
    run = launch(data_dir=data)
    run.wait_for(EMBED_READY)
    out = run.output()
    assert warning.format(path=key_file) in out
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert "loose-key-0123456789" not in out
    stop(run)


def test_tei_binary_without_exec_bit_says_chmod(launch: Launch, tei_dir: Path) -> None:
    """Row 29: EMBED_TEI_BIN is a 0644 file -> exit 2 with the chmod fix, nothing spawned."""
    tei = make_tei(tei_dir)
    tei.chmod(0o644)
    run = launch(tei=tei)
    assert run.wait_exit(10) == 2
    out = run.output()
    assert f"chmod +x {tei}" in out and "EMBED_TEI_BIN" in out
    assert "Traceback" not in out and "[embed]" not in out


# -- disk full (row 22): a tiny tmpfs as the data dir, in a private mount namespace ----------------


def tmpfs_prefix(data: Path, size: str) -> list[str]:
    """Run the launcher in its own mount namespace with a tmpfs of ``size`` mounted on ``data``."""
    script = 'mount -t tmpfs -o "size=$1" embed-test "$2" && shift 2 && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", size, str(data)]


@pytest.fixture(scope="module")
def tmpfs_works(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Skip unless this user may mount a tmpfs in a private mount namespace (root, CAP_SYS_ADMIN)."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare(1) is not installed")
    where = tmp_path_factory.mktemp("tmpfs-probe")
    probe = subprocess.run([*tmpfs_prefix(where, "64k"), "true"], capture_output=True, text=True, timeout=10)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a private mount namespace: {probe.stderr.strip()}")


def test_disk_too_small_is_refused_before_downloading(
    wrapped: Wrapped, tmpfs_works: None, tmp_path: Path, hub: HubStandIn
) -> None:
    """Row 22 (preflight): the model cannot fit -> exit 1 naming the path and both sizes, no TEI."""
    tei = service_tei(tmp_path)
    env = launcher_env(tmp_path, hub.endpoint, tei.path)
    data = Path(env["EMBED_DATA_DIR"])
    data.mkdir()
    run = wrapped(tmpfs_prefix(data, "96k"), env)
    assert run.wait_exit(20) == 1
    out = run.output()
    assert [line for line in error_lines(out) if line.startswith(f"Error: not enough disk space in {data}")], out
    assert "free" in error_lines(out)[0] and "needs" in error_lines(out)[0]
    assert "Traceback" not in out and tei.spawns("embed") == []


def test_disk_filling_up_mid_download_is_one_line_and_exit_1(
    wrapped: Wrapped, tmpfs_works: None, tmp_path: Path, slow_hub: HubStandIn
) -> None:
    """Row 22 (ENOSPC): the disk fills while the weights download -> exit 1, path and free space, no TEI."""
    tei = service_tei(tmp_path)
    env = launcher_env(tmp_path, slow_hub.endpoint, tei.path)
    data = Path(env["EMBED_DATA_DIR"])
    data.mkdir()
    run = wrapped(tmpfs_prefix(data, "4m"), env)
    inside = Path(f"/proc/{run.proc.pid}/root") / data.relative_to("/")  # the tmpfs as the launcher sees it
    wait_until(lambda: big_partial_downloads(inside), 15)
    with open(inside / "filler", "wb", buffering=0) as filler:  # fill the tmpfs to the last byte
        try:
            while True:
                filler.write(b"\0" * 65536)
        except OSError as exc:
            assert exc.errno == 28, exc
    assert run.wait_exit(20) == 1
    out = run.output()
    lines = error_lines(out)
    assert len(lines) == 1 and lines[0].startswith(f"Error: not enough disk space in {data}"), out
    assert "ran out of space" in lines[0]
    assert "Traceback" not in out and tei.spawns("embed") == []


def fill(directory: Path) -> Path:
    """`dd` zeros into ``directory`` until its filesystem is full, as a runaway log or a big copy would."""
    filler = directory / "filler"
    dd = subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k"], capture_output=True, text=True, timeout=60)
    assert dd.returncode != 0 and "No space left on device" in dd.stderr, dd.stderr
    return filler


def test_a_full_data_volume_never_stops_the_server(
    wrapped: Wrapped, tmpfs_works: None, tmp_path: Path, hub: HubStandIn
) -> None:
    """Row 22 (while serving): the data dir fills up -> one warning naming .status.json, the servers keep
    serving, a TEI that crashes meanwhile is restarted; the status file resumes once space is back."""
    tei = service_tei(tmp_path)
    env = launcher_env(tmp_path, hub.endpoint, tei.path, {"RERANK_ENABLED": "true"})
    data = Path(env["EMBED_DATA_DIR"])
    data.mkdir()
    run = wrapped(tmpfs_prefix(data, "16m"), env)
    run.wait_for(BOTH_READY)
    inside = Path(f"/proc/{run.proc.pid}/root") / data.relative_to("/")  # the tmpfs as the launcher sees it
    status = inside / ".status.json"
    filler = fill(inside)
    warning = f"Warning: cannot write {data / '.status.json'} (No space left on device); serving continues"
    first = json.loads(status.read_text())["services"]["embed"]["pid"]
    os.kill(first, signal.SIGKILL)  # a crash while the disk is full: publishing its exit fails
    run.wait_for(warning, 15)
    run.wait_for("Embeddings server is ready again (restart 1).", 15)
    assert run.proc.poll() is None
    assert health(run.ports["EMBED_PORT"]) == 200 and health(run.ports["RERANK_PORT"]) == 200
    assert json.loads(status.read_text())["services"]["embed"]["pid"] == first  # the file is stale, not torn
    filler.unlink()
    run.wait_for(f"The live status is written to {data / '.status.json'} again.", 15)
    wait_until(lambda: json.loads(status.read_text())["services"]["embed"]["restarts"] == 1, 10)
    assert run.output().count(warning) == 1
    assert error_lines(run.output()) == [
        "Error: Embeddings server exited unexpectedly (signal SIGKILL (137), possibly out of memory)."
    ]
    assert "Traceback" not in run.output()
    stop(run)
