"""Replicas through the launcher, end to end: a fake `nvidia-smi` lists 4 GPUs, one TEI stand-in per GPU
behind the gateway, each told exactly its GPU; a replica stopped or killed under load costs no request and no
sibling restart; a replica out of GPU memory twice is given up while its siblings serve."""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import live_client
import pytest
from conftest import LauncherRun, make_tei, manage, wait_until
from live_client import Load, live_services
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration

Launch = Callable[..., LauncherRun]
KEY = "replicas-key"
MODEL = "BAAI/bge-small-en-v1.5"


def fake_smi(directory: Path, count: int) -> str:
    """A `nvidia-smi` that lists ``count`` GPUs for `-L`, as the real one prints them; returns a PATH."""
    smi = directory / "nvidia-smi"
    lines = "".join(f"GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-{i:08d}-0000-0000-0000-000000000000)\\n"
                    for i in range(count))
    smi.write_text(f'#!/bin/sh\n[ "$1" = "-L" ] || exit 1\nprintf "{lines}"\n')
    smi.chmod(0o755)
    return f"{directory}:{os.environ.get('PATH', '/usr/bin:/bin')}"


def env_log(path: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line]
    except OSError:
        return []


def services(run: LauncherRun) -> dict[str, dict[str, Any]]:
    return live_services(run.data_dir)


def embed(port: int, texts: list[str]) -> int:
    return live_client.embed(port, MODEL, texts, key=KEY)


@pytest.fixture
def four_gpus(launch: Launch, tei_dir: Path, tmp_path: Path) -> tuple[LauncherRun, Path]:
    log = tmp_path / "env.jsonl"
    tei = make_tei(tei_dir, load_s=0.1, env_log=log)
    run = launch({"PATH": fake_smi(tei_dir, 4), "EMBED_API_KEY": KEY, "EMBED_GATEWAY_WAIT": "20"}, tei=tei)
    run.wait_for("Text embeddings server is ready", timeout_s=60)
    return run, log


def test_one_replica_per_gpu_each_told_exactly_its_gpu(four_gpus: tuple[LauncherRun, Path]) -> None:
    run, log = four_gpus
    started = env_log(log)
    assert sorted(r["cuda_visible_devices"] for r in started) == ["0", "1", "2", "3"]
    assert len({r["port"] for r in started}) == 4
    live = services(run)
    assert {name: (s["gpu"], s["replica"], s["service"]) for name, s in live.items() if s["kind"] == "embed"} == {
        f"embed#{i}": (str(i), i, "embed") for i in range(4)}
    by_pid = {r["pid"]: r["cuda_visible_devices"] for r in started}
    assert all(by_pid[live[f"embed#{i}"]["pid"]] == str(i) for i in range(4))  # the status tells the truth
    assert "Replicas:" in run.output() and f"{MODEL}: 4 replicas (GPU 0, GPU 1, GPU 2, GPU 3)" in run.output()
    request = urllib.request.Request(f"http://127.0.0.1:{run.ports['EMBED_PORT']}/v1/models",
                                     headers={"Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert [m["id"] for m in json.loads(response.read())["data"]] == [MODEL]  # the model once
    report = json.loads(manage(run, "--status", "--json").stdout)
    rows = [(s["name"], s["service"], s["replica"], s["gpu"], s["state"]) for s in report["services"]]
    assert rows[:4] == [(f"embed#{i}", "embed", i, str(i), "running") for i in range(4)]
    assert all(isinstance(s["inputs_in_flight"], int) for s in report["services"][:4])
    table = manage(run, "--status").stdout.splitlines()
    assert "REPLICA" in table[1] and "GPU" in table[1] and "INPUTS" in table[1]
    assert table[3].split()[:4] == ["embed#1", MODEL, "1", "1"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["stopped", "killed"])
def test_a_replica_stopped_or_killed_under_load_costs_no_request_and_restarts_alone(
        four_gpus: tuple[LauncherRun, Path], sig: signal.Signals) -> None:
    """SIGTERM or SIGKILL to one replica's TEI mid-traffic: the supervisor restarts it on its own GPU;
    requests go to its siblings meanwhile, including those inside it when it died; no sibling restarts."""
    run, log = four_gpus
    port = run.ports["EMBED_PORT"]
    before = services(run)
    with Load(lambda: embed(port, ["a", "b", "c"]), threads=6) as load:
        statuses = load.answers
        wait_until(lambda: len(statuses) >= 30, 30)
        os.kill(before["embed#1"]["pid"], sig)
        wait_until(lambda: services(run)["embed#1"]["restarts"] == 1 and services(run)["embed#1"]["state"] == "running",
                   30)
        served = len(statuses)
        wait_until(lambda: len(statuses) >= served + 30, 30)  # traffic goes on after the restart
    # A draining TEI answers what it accepted; one refused, reset in its backlog as it closed, or inside it
    # when it was killed goes to a sibling (once: a request that kills two replicas is poison, a 502).
    assert statuses and set(statuses) == {200}, sorted(set(statuses))
    after = services(run)
    for i in (0, 2, 3):
        assert (after[f"embed#{i}"]["pid"], after[f"embed#{i}"]["restarts"]) == (before[f"embed#{i}"]["pid"], 0)
    restarted = [r for r in env_log(log) if r["pid"] == after["embed#1"]["pid"]]
    assert [r["cuda_visible_devices"] for r in restarted] == ["1"]  # back on its own GPU


def test_a_replica_out_of_gpu_memory_twice_is_given_up_while_siblings_serve(
    launch: Launch, tei_dir: Path, tmp_path: Path
) -> None:
    tei = make_tei(tei_dir, load_s=0.1, cuda_oom_gpus="2")
    run = launch({"PATH": fake_smi(tei_dir, 4), "EMBED_API_KEY": KEY}, tei=tei)
    run.wait_for("Text embeddings server is ready", timeout_s=60)
    out = run.output()
    give_up = [line for line in out.splitlines() if "giving up on this replica" in line]
    assert len(give_up) == 1
    for words in ("replica 2", "GPU 2", MODEL, "twice in a row", "3 other replicas keep serving", "EMBED_REPLICAS",
                  "EMBED_MAX_BATCH_TOKENS"):
        assert words in give_up[0]
    assert out.count("CUDA_ERROR_OUT_OF_MEMORY") >= 2
    assert all(embed(run.ports["EMBED_PORT"], ["x"] * 5) == 200 for _ in range(8))
    assert run.proc.poll() is None
    live = services(run)
    assert live["embed#2"]["gave_up"] is True and live["embed#2"]["pid"] is None
    assert [live[f"embed#{i}"]["restarts"] for i in (0, 1, 3)] == [0, 0, 0]
    status = manage(run, "--status", "--json")
    assert status.returncode == 0  # the model serves: the container stays healthy
    rows = {s["name"]: s for s in json.loads(status.stdout)["services"]}
    assert rows["embed#2"]["state"] == "gave up" and rows["embed#0"]["state"] == "running"


def test_cpu_replicas_split_the_cores(launch: Launch, tei_dir: Path, tmp_path: Path) -> None:
    """No GPU (CUDA_VISIBLE_DEVICES empty): two explicit replicas, each pinned to its half of the cores."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.skip("needs two cores")
    log = tmp_path / "env.jsonl"
    run = launch({"EMBED_REPLICAS": "2", "CUDA_VISIBLE_DEVICES": "", "EMBED_API_KEY": KEY},
                 tei=make_tei(tei_dir, load_s=0.1, env_log=log))
    run.wait_for("Text embeddings server is ready", timeout_s=60)
    started = env_log(log)
    share = len(cores) // 2
    assert sorted(r["cpus"] for r in started) == [cores[:share], cores[share:2 * share]]
    assert [r["tokenization_workers"] for r in started] == [share, share]
    assert all(r["cuda_visible_devices"] in (None, "") for r in started)
    assert embed(run.ports["EMBED_PORT"], ["a", "b"]) == 200


def test_a_models_only_replica_out_of_gpu_memory_twice_stops_the_launcher_with_the_fix(
    launch: Launch, tei_dir: Path
) -> None:
    """No sibling to serve: the launcher gives up (exit 1) after the second out-of-memory start, not the fifth."""
    run = launch({"PATH": fake_smi(tei_dir, 1)}, tei=make_tei(tei_dir, load_s=0.1, cuda_oom_gpus="0"))
    assert run.wait_exit(60) == 1
    out = run.output()
    assert "Embeddings (GPU 0) server ran out of GPU memory on GPU 0 twice in a row" in out
    assert "EMBED_MAX_BATCH_TOKENS" in out and "giving up" in out
    assert out.count("server failed to start") == 2  # two starts, not EMBED_START_RETRIES (5)


def test_metrics_reads_the_launchers_replica_states_and_restarts(four_gpus: tuple[LauncherRun, Path]) -> None:
    """The gateway's /metrics reads the launcher's live status: four ready replicas, then a crashed one's
    restart counted under `crash` once the launcher has restarted it."""
    run, _log = four_gpus

    def scrape() -> dict[str, list[Any]]:
        with urllib.request.urlopen(f"http://127.0.0.1:{run.ports['EMBED_PORT']}/metrics", timeout=10) as answer:
            return {f.name: f.samples for f in text_string_to_metric_families(answer.read().decode())}

    def ready(found: dict[str, list[Any]]) -> set[str]:
        return {s.labels["replica"] for s in found["embed_replica_state"]
                if s.labels["model"] == MODEL and s.labels["state"] == "ready" and s.value == 1}

    wait_until(lambda: ready(scrape()) == {"0", "1", "2", "3"}, timeout_s=20)
    os.kill(services(run)["embed#2"]["pid"], signal.SIGKILL)
    wait_until(lambda: services(run)["embed#2"]["restarts"] == 1, timeout_s=30)

    def crash_counted() -> bool:
        found = scrape()
        crashes = {s.labels["replica"]: s.value for s in found["embed_replica_restarts"]
                   if s.labels["reason"] == "crash" and s.labels["model"] == MODEL}
        return crashes == {"0": 0, "1": 0, "2": 1, "3": 0}

    wait_until(crash_counted, timeout_s=10)
    assert [s.value for s in scrape()["embed_up"] if s.labels["model"] == MODEL] == [1.0]
