"""The image's life as the README tells it: first start, key, stop, restart on the same volume, healing."""

from __future__ import annotations

import pytest
from conftest import wait_until
from containers.podman import Podman
from fake_hub.server import HubStandIn

from image.launcher_container import Container, Starter

pytestmark = [pytest.mark.image, pytest.mark.timeout(1200)]

MODEL = "BAAI/bge-small-en-v1.5"
RERANKER = "BAAI/bge-reranker-v2-m3"
STOP_LIMIT_S = 1.0
# Prints the pid of every TEI router in the container (the stand-in runs under python3).
TEI_PIDS = (
    "import os\n"
    "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
    "    try:\n"
    "        argv = open(f'/proc/{pid}/cmdline', 'rb').read().split(b'\\0')\n"
    "    except OSError:\n"
    "        continue\n"
    "    if any(a.endswith(b'text-embeddings-router') for a in argv[:2]):\n"
    "        print(pid)\n"
)


def tei_pids(container: Container) -> list[str]:
    return container.exec("python3", "-c", TEI_PIDS, check=True).split()


def test_first_start_downloads_and_serves_with_a_generated_key(pm: Podman, start: Starter, hub: HubStandIn) -> None:
    """A fresh volume: the model comes from the Hub, the container turns healthy, the key guards the API."""
    hub.clear_log()
    container = start(pm.volume("data"))
    container.wait_healthy()
    assert hub.downloaded(MODEL)
    key = container.getkey()
    assert key.startswith("embed-") and len(key) == 6 + 48
    assert container.embed(key) == 200
    assert container.embed(None) == 401
    assert container.embed("wrong") == 401


def test_stop_is_clean_and_prompt(pm: Podman, start: Starter) -> None:
    """``podman stop`` ends the container with exit code 0 in well under a second."""
    container = start(pm.volume("data"))
    container.wait_healthy()
    elapsed_s = container.stop()
    assert container.state("{{.State.ExitCode}}") == "0"
    assert elapsed_s < STOP_LIMIT_S, f"podman stop took {elapsed_s:.2f} s"


def test_new_container_on_the_same_volume_keeps_key_and_models(pm: Podman, start: Starter, hub: HubStandIn) -> None:
    """Replacing the container (an upgrade) keeps the key and downloads nothing."""
    volume = pm.volume("data")
    first = start(volume)
    first.wait_healthy()
    key = first.getkey()
    first.stop()
    hub.clear_log()
    second = start(volume)
    second.wait_healthy()
    assert second.getkey() == key
    assert second.embed(key) == 200
    assert hub.downloaded(MODEL) == {}


def test_killed_tei_is_restarted_and_the_container_stays_up(pm: Podman, start: Starter) -> None:
    """SIGKILL to TEI inside the container: the launcher starts a new one; the container never exits."""
    container = start(pm.volume("data"))
    container.wait_healthy()
    key = container.getkey()
    [old] = tei_pids(container)
    container.exec("sh", "-c", "kill -KILL \"$1\"", "sh", old, check=True)  # no procps: the builtin
    wait_until(lambda: tei_pids(container) not in ([], [old]), timeout_s=30, interval_s=0.2)
    wait_until(lambda: container.embed(key) == 200, timeout_s=30, interval_s=0.2)
    container.wait_healthy()
    assert container.running()


def test_reranker_serves_on_its_own_port(pm: Podman, start: Starter, hub: HubStandIn) -> None:
    """RERANK_ENABLED=true: a second model is downloaded and /rerank answers with the same key."""
    container = start(pm.volume("data"), env={"RERANK_ENABLED": "true"})
    container.wait_healthy()
    assert hub.downloaded(RERANKER)
    key = container.getkey()
    body = {"query": "What is AI?", "texts": ["AI is artificial intelligence.", "Paris is in France."]}
    assert container.post("/rerank", body, key, port_name="RERANK_PORT") == 200
    assert container.post("/rerank", body, None, port_name="RERANK_PORT") == 401
    assert container.embed(key) == 200


def test_many_models_behind_the_gateway(pm: Podman, start: Starter, hub: HubStandIn) -> None:
    """A list of models: one TEI each inside the container, the gateway (aiohttp, uvloop) on the public ports."""
    container = start(pm.volume("data"), env={"EMBED_MODEL": f"{MODEL},BAAI/bge-m3", "RERANK_ENABLED": "true"})
    container.wait_healthy()
    assert hub.downloaded("BAAI/bge-m3")
    key = container.getkey()
    assert container.post("/v1/embeddings", {"input": ["x"], "model": "BAAI/bge-m3"}, key) == 200
    assert container.post("/v1/embeddings", {"input": ["x"], "model": "nope/none"}, key) == 404
    cohere = {"query": "What is AI?", "documents": ["AI is artificial intelligence.", "Paris is in France."]}
    assert container.post("/v1/rerank", cohere, key, port_name="RERANK_PORT") == 200
    assert len(tei_pids(container)) == 3
