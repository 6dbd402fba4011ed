"""Busy is not dead, end to end: a loaded TEI is never restarted; a hung or broken one is replaced.

The TEI stand-in models TEI 1.9.3's single backend thread (FAKE_TEI_BATCH_S: /health waits behind
the batch in progress, /metrics answers at once) and its failure modes (FAKE_TEI_HEALTH_FILE:
"hung" or "503"). Timings are scaled down through the launcher's variables.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import FAKE_TEI, LauncherRun, make_tei, manage, wait_until
from live_client import post

pytestmark = pytest.mark.integration

Launch = Callable[..., LauncherRun]
BOTH_READY = "Text embeddings & reranking server is ready"
TIMINGS = {
    "EMBED_HEALTH_INTERVAL": "0.5",  # the health timeout is min(5 s, interval): 0.5 s
    "EMBED_RESTART_DELAY": "0.3",
    "RERANK_ENABLED": "true",
    "EMBED_API_KEY": "",
}


def embed_only_tei(directory: Path, **knobs: object) -> Path:
    """A TEI wrapper whose FAKE_TEI_* knobs apply to the embeddings child only (the reranker stays plain)."""
    exports = " ".join(f"FAKE_TEI_{k.upper()}={shlex.quote(str(v))}" for k, v in knobs.items())
    path = directory / "tei-embed-knobs"
    path.write_text(
        "#!/bin/sh\n"
        'case "$*" in *"--served-model-name BAAI/bge-small-en-v1.5"*) export ' + exports + " ;; esac\n"
        f"export FAKE_TEI_LOAD_S=0.1\n"
        f'exec {shlex.quote(sys.executable)} {shlex.quote(str(FAKE_TEI))} "$@"\n'
    )
    path.chmod(0o755)
    return path


def service(run: LauncherRun, name: str) -> dict[str, object]:
    try:
        return dict(json.loads((run.data_dir / ".status.json").read_text())["services"][name])
    except (OSError, ValueError, KeyError):
        return {}


def status_json(run: LauncherRun) -> tuple[int, dict[str, Any]]:
    result = manage(run, "--status", "--json")
    return result.returncode, json.loads(result.stdout)


def test_a_busy_tei_under_sustained_load_is_never_restarted(launch: Launch, tei_dir: Path) -> None:
    """Every batch takes 3× the health timeout, for over ten health intervals: no restart, every answer 200."""
    run = launch({**TIMINGS, "EMBED_HANG_TIMEOUT": "6"}, tei=embed_only_tei(tei_dir, batch_s=1.5))
    run.wait_for(BOTH_READY)
    pid = run.child_pid("embed")
    answers: list[int] = []
    stop = time.monotonic() + 6.0  # 12 health intervals

    def client() -> None:
        while time.monotonic() < stop:
            answers.append(post(run.ports["EMBED_PORT"], "/v1/embeddings", {"input": "hello"}))

    clients = [threading.Thread(target=client) for _ in range(3)]
    for c in clients:
        c.start()
    wait_until(lambda: service(run, "embed").get("health") == "busy", timeout_s=5)
    code, report = status_json(run)
    assert code == 0 and report["healthy"] is True  # busy counts as healthy: no HEALTHCHECK failure
    embed = next(s for s in report["services"] if s["name"] == "embed")
    assert embed["health"] == "busy" and embed["queue_size"] is not None
    assert post(run.ports["RERANK_PORT"], "/rerank", {"query": "q", "texts": ["a", "b"]}) == 200
    for c in clients:
        c.join(timeout=60)
    assert answers and set(answers) == {200}, answers
    assert run.child_pid("embed") == pid and service(run, "embed").get("restarts") == 0
    assert "restarting it" not in run.output()
    wait_until(lambda: service(run, "embed").get("health") == "ready", timeout_s=5)


def test_a_hung_tei_is_replaced_within_the_hang_timeout(launch: Launch, tei_dir: Path, tmp_path: Path) -> None:
    """/health and inference silent, /metrics frozen: replaced after EMBED_HANG_TIMEOUT; the reranker serves on."""
    switch = tmp_path / "embed-health"
    run = launch({**TIMINGS, "EMBED_HANG_TIMEOUT": "3"}, tei=embed_only_tei(tei_dir, health_file=switch))
    run.wait_for(BOTH_READY)
    pid = run.child_pid("embed")
    switch.write_text("hung")
    for _ in range(3):  # requests stuck in the backend: a non-empty queue, frozen counters
        threading.Thread(target=post, args=(run.ports["EMBED_PORT"], "/embed", {"inputs": "x"}),
                         kwargs={"timeout_s": 20.0}, daemon=True).start()  # fmt: skip
    wait_until(lambda: service(run, "embed").get("health") == "busy", timeout_s=5)
    assert status_json(run)[0] == 0  # not yet known to be hung: busy
    # Found after the 3 s hang timeout, far before the 600 s default (benchmarks/liveness_bench.py times it).
    run.wait_for("Embeddings server is hung", timeout_s=60)
    assert post(run.ports["RERANK_PORT"], "/rerank", {"query": "q", "texts": ["a", "b"]}) == 200
    switch.unlink()
    wait_until(lambda: service(run, "embed").get("state") == "running" and run.child_pid("embed") != pid,
               timeout_s=60)  # fmt: skip
    assert post(run.ports["EMBED_PORT"], "/v1/embeddings", {"input": "hello"}) == 200
    assert status_json(run)[0] == 0
    lines = [line for line in run.output().splitlines() if "is hung" in line]
    assert re.search(r"no work completed for \d+ s \(queue \d+, EMBED_HANG_TIMEOUT=3\); restarting it\.$", lines[0])


def test_a_hung_tei_is_replaced_while_clients_keep_sending(launch: Launch, tei_dir: Path, tmp_path: Path) -> None:
    """Hung backend, three clients sending every second with a short timeout: the queue grows and 429s move
    te_request_failure, but nothing completes, so the TEI is replaced within EMBED_HANG_TIMEOUT + one check."""
    switch = tmp_path / "embed-health"
    # Two permits for three clients sending together: each round one is refused (429) while the other two wait.
    # (More permits than clients would refuse nothing: like hyper, the stand-in frees a permit when its client
    # hangs up, so timed-out requests do not pile up.)
    env = {**TIMINGS, "EMBED_HANG_TIMEOUT": "3", "EMBED_MAX_CONCURRENT_REQUESTS": "2"}
    run = launch(env, tei=embed_only_tei(tei_dir, health_file=switch))
    run.wait_for(BOTH_READY)
    pid = run.child_pid("embed")
    answers: list[int] = []
    done = threading.Event()

    def client() -> None:
        while not done.is_set():
            answers.append(post(run.ports["EMBED_PORT"], "/embed", {"inputs": "x"}, timeout_s=0.5))
            done.wait(1.0)

    switch.write_text("hung")
    clients = [threading.Thread(target=client) for _ in range(3)]
    for c in clients:
        c.start()
    try:
        run.wait_for("Embeddings server is hung", timeout_s=20)
    finally:
        done.set()
        for c in clients:
            c.join(timeout=10)
    assert 429 in answers and 200 not in answers, answers  # arrivals kept coming and were refused: not progress
    line = next(line for line in run.output().splitlines() if "is hung" in line)
    idle = re.search(r"no work completed for (\d+) s \(queue (\d+), EMBED_HANG_TIMEOUT=3\)", line)
    assert idle is not None, line
    # The hang clock runs from the last sign of life; a check lands every 0.5 s and takes up to 1 s (/health,
    # then /metrics), so the launcher saw at most HANG_TIMEOUT + one check (+1 for the rounding).
    assert 3 <= int(idle.group(1)) <= 3 + 0.5 + 1 + 1, line
    switch.unlink()
    wait_until(lambda: service(run, "embed").get("state") == "running" and run.child_pid("embed") != pid,
               timeout_s=15)  # fmt: skip
    assert post(run.ports["EMBED_PORT"], "/embed", {"inputs": "x"}) == 200


def test_an_unhealthy_tei_is_replaced_after_the_failing_checks(launch: Launch, tei_dir: Path, tmp_path: Path) -> None:
    """/health 503 (inference 424): replaced after EMBED_HEALTH_FAILURES checks; --status says so meanwhile."""
    switch = tmp_path / "embed-health"
    run = launch({**TIMINGS, "EMBED_HEALTH_FAILURES": "3", "EMBED_HEALTH_INTERVAL": "1"},
                 tei=embed_only_tei(tei_dir, health_file=switch))  # fmt: skip
    run.wait_for(BOTH_READY)
    pid = run.child_pid("embed")
    switch.write_text("503")
    assert post(run.ports["EMBED_PORT"], "/embed", {"inputs": "x"}) == 424
    wait_until(lambda: service(run, "embed").get("health") == "unhealthy", timeout_s=5)
    code, report = status_json(run)
    assert code == 1 and report["healthy"] is False
    run.wait_for("Embeddings server failed 3 health checks in a row; restarting it.", timeout_s=10)
    assert post(run.ports["RERANK_PORT"], "/rerank", {"query": "q", "texts": ["a", "b"]}) == 200
    switch.unlink()
    wait_until(lambda: service(run, "embed").get("state") == "running" and run.child_pid("embed") != pid,
               timeout_s=15)  # fmt: skip
    assert post(run.ports["EMBED_PORT"], "/embed", {"inputs": "x"}) == 200
    wait_until(lambda: status_json(run)[0] == 0, timeout_s=5)


def ready_for_s(run: LauncherRun) -> float:
    """Seconds the embeddings child has been running (0 while it is not)."""
    s = service(run, "embed")
    since = s.get("since")
    return time.time() - since if s.get("state") == "running" and isinstance(since, (int, float)) else 0.0


def restart_delays(run: LauncherRun) -> list[float]:
    return [float(d) for d in re.findall(r"Restarting embeddings server in ([0-9.]+) s", run.output())]


def test_a_tei_that_served_a_while_restarts_at_the_base_delay(launch: Launch) -> None:
    """Killed after serving past EMBED_BACKOFF_RESET_AFTER: every restart waits the base delay, no doubling."""
    run = launch({**TIMINGS, "EMBED_BACKOFF_RESET_AFTER": "0.5", "RERANK_ENABLED": "false"})
    run.wait_for("Text embeddings server is ready")
    for n in range(1, 4):
        wait_until(lambda: ready_for_s(run) > 0.7, timeout_s=10)  # longer than EMBED_BACKOFF_RESET_AFTER
        os.kill(run.child_pid("embed"), signal.SIGKILL)
        wait_until(lambda: service(run, "embed").get("restarts") == n and ready_for_s(run) > 0, timeout_s=10)  # noqa: B023
    assert restart_delays(run) == [0.3, 0.3, 0.3]


def test_a_tei_that_dies_soon_after_ready_backs_off(launch: Launch, tei_dir: Path) -> None:
    """Dying within EMBED_BACKOFF_RESET_AFTER of ready is a loop: each restart waits twice as long."""
    tei = make_tei(tei_dir, load_s=0.1, exit_after_s=0.2)
    run = launch({**TIMINGS, "EMBED_BACKOFF_RESET_AFTER": "60", "RERANK_ENABLED": "false"}, tei=tei)
    wait_until(lambda: len(restart_delays(run)) >= 3, timeout_s=15)
    assert restart_delays(run)[:3] == [0.3, 0.6, 1.2]
