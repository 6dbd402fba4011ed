"""Many models through the launcher, end to end: one TEI per model behind the gateway, all supervised.

The launcher downloads every model from the Hub stand-in, starts one TEI stand-in per model on
127.0.0.1 and the gateway on the public ports; a TEI killed under load or the gateway itself are
restarted while requests wait; embed_manage sees every child.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import LauncherRun, manage, wait_until
from faultkit import gone, service_tei

pytestmark = pytest.mark.integration

Launch = Callable[..., LauncherRun]
KEY = "many-models-key"
MODELS = {
    "EMBED_MODEL": "BAAI/bge-small-en-v1.5,BAAI/bge-m3,sentence-transformers/all-MiniLM-L6-v2",
    "RERANK_ENABLED": "true",
    "EMBED_API_KEY": KEY,
    "EMBED_GATEWAY_WAIT": "20",
}


def call(port: int, path: str, body: object | None = None, key: str | None = KEY) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, headers=headers,
                                     method="GET" if body is None else "POST")  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            return int(response.status), json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, json.loads(raw) if raw.startswith(b"{") else raw
    except OSError:
        return 0, None


def services(run: LauncherRun) -> dict[str, dict[str, Any]]:
    try:
        return dict(json.loads((run.data_dir / ".status.json").read_text())["services"])
    except (OSError, ValueError, KeyError):
        return {}


@pytest.fixture
def many(launch: Launch) -> LauncherRun:
    run = launch(MODELS)
    run.wait_for("Text embeddings & reranking server is ready", timeout_s=60)
    return run


def test_every_model_is_served_behind_one_port(many: LauncherRun) -> None:
    """/v1/models lists them; /v1/embeddings routes by model; the rerank port speaks Cohere too."""
    port, rerank_port = many.ports["EMBED_PORT"], many.ports["RERANK_PORT"]
    status, listing = call(port, "/v1/models")
    assert status == 200
    assert [(m["id"], m["kind"]) for m in listing["data"]] == [
        ("BAAI/bge-small-en-v1.5", "embed"), ("BAAI/bge-reranker-v2-m3", "rerank"),
        ("BAAI/bge-m3", "embed"), ("sentence-transformers/all-MiniLM-L6-v2", "embed"),
    ]  # fmt: skip
    for model in ("BAAI/bge-m3", "sentence-transformers/all-MiniLM-L6-v2", None):
        body = {"input": ["one", "two"]} | ({"model": model} if model else {})
        status, answer = call(port, "/v1/embeddings", body)
        assert status == 200 and len(answer["data"]) == 2
        assert answer["model"] == (model or "BAAI/bge-small-en-v1.5")
    status, answer = call(port, "/v1/embeddings", {"input": "x", "model": "nope/nothing"})
    assert status == 404 and "BAAI/bge-m3" in answer["error"]["message"]
    assert call(port, "/v1/embeddings", {"input": "x"}, key=None)[0] == 401
    status, ranked = call(rerank_port, "/v1/rerank", {"query": "q", "documents": ["a q", "b"], "top_n": 1})
    assert status == 200 and len(ranked["results"]) == 1 and "relevance_score" in ranked["results"][0]
    status, native = call(rerank_port, "/rerank", {"query": "q", "texts": ["a q", "b"]})
    assert status == 200 and {r["index"] for r in native} == {0, 1}


def test_every_child_is_supervised_and_listed(many: LauncherRun) -> None:
    """--status shows each model's TEI and the gateway, all ready; --showinfo lists the other models."""
    result = manage(many, "--status", "--json")
    assert result.returncode == 0, result.stdout
    report = json.loads(result.stdout)
    assert [s["name"] for s in report["services"]] == ["embed", "rerank", "embed-bge-m3", "embed-all-minilm-l6-v2",
                                                      "gateway"]  # fmt: skip
    assert all(s["health"] == "ready" for s in report["services"])
    info = manage(many, "--showinfo")
    assert info.returncode == 0 and "BAAI/bge-m3" in info.stdout


def test_a_model_killed_under_load_fails_only_what_was_inside_it(many: LauncherRun) -> None:
    """SIGKILL one model's TEI while clients post to it: a request inside the dying TEI gets 502 (never replayed:
    it may be what killed it); every request sent after the kill waits for the replacement and gets 200."""
    port = many.ports["EMBED_PORT"]
    pid = many.child_pid("embed-bge-m3")
    answers: list[tuple[bool, int]] = []  # (sent after the kill, status)
    killed, done = threading.Event(), threading.Event()

    def client() -> None:
        while not done.is_set():
            after = killed.is_set()
            answers.append((after, call(port, "/v1/embeddings", {"input": "hello", "model": "BAAI/bge-m3"})[0]))

    clients = [threading.Thread(target=client) for _ in range(4)]
    for c in clients:
        c.start()
    try:  # the clients send until the replacement has served some: the kill always falls inside their window
        wait_until(lambda: len(answers) >= 8, timeout_s=10)
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: gone([pid]), timeout_s=5)  # its sockets are closed: what is sent now finds it dead
        killed.set()
        wait_until(lambda: services(many)["embed-bge-m3"].get("restarts") == 1, timeout_s=20)
        wait_until(lambda: services(many)["embed-bge-m3"].get("state") == "running", timeout_s=20)
        served = len(answers)
        wait_until(lambda: len(answers) >= served + 8, timeout_s=20)  # answered by the replacement
    finally:
        done.set()
        for c in clients:
            c.join(timeout=60)
    before = [status for after, status in answers if not after]
    after_kill = [status for after, status in answers if after]
    assert len(after_kill) >= 8 and set(after_kill) == {200}, after_kill
    assert set(before) <= {200, 502} and before.count(502) <= len(clients), before  # at most one per client
    assert call(port, "/v1/embeddings", {"input": "x", "model": "BAAI/bge-small-en-v1.5"})[0] == 200


def test_a_gateway_crash_is_healed(many: LauncherRun) -> None:
    """The gateway is a child like the TEIs: SIGKILLed, it is restarted and serves again."""
    pid = many.child_pid("gateway")
    os.kill(pid, signal.SIGKILL)
    many.wait_for("Gateway server is ready again", timeout_s=20)
    assert many.child_pid("gateway") != pid
    assert call(many.ports["EMBED_PORT"], "/v1/embeddings", {"input": "x", "model": "BAAI/bge-m3"})[0] == 200


def test_a_tei_restarting_during_start_up_does_not_get_the_gateway_killed(launch: Launch, tei_dir: Path) -> None:
    """The gateway is ready once it listens: its start is not judged against the TEIs' load time. A TEI that
    fails its first start and loads again takes longer than EMBED_READY_TIMEOUT in all; the gateway lives on."""
    tei = service_tei(tei_dir, common={"load_s": 2.5}, embed={"load_s": 2.0, "fail_start": 1}, first_only=("embed",))
    run = launch({"RERANK_ENABLED": "true", "EMBED_GATEWAY": "true", "EMBED_READY_TIMEOUT": "5",
                  "EMBED_API_KEY": ""}, tei=tei.path)  # fmt: skip
    run.wait_for("Restarting embeddings server", timeout_s=20)
    run.wait_for("Text embeddings & reranking server is ready", timeout_s=30)
    out = run.output()
    assert "Gateway server did not become ready" not in out and "Gateway server failed" not in out, out
    assert services(run)["gateway"]["restarts"] == 0 and len(tei.spawns("embed")) == 2
    assert call(run.ports["EMBED_PORT"], "/v1/embeddings", {"input": "x"}, key=None)[0] == 200
