"""Better than a proxy: batches cut and joined, waits through restarts, drains; a request is sent again only
when TEI provably never read it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from conftest import wait_until
from gateway_harness import (
    EMBED_KEY,
    RERANK_KEY,
    Stack,
    auth,
    make_teis,
    requests_received,
    stack_models,
    start_gateway,
    start_stack,
    stop_stack,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def stacks(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    started: list[Stack] = []

    def start(**kwargs: object) -> Stack:
        started.append(start_stack(tmp_path, **kwargs))  # type: ignore[arg-type]
        return started[-1]

    yield start
    for stack in started:
        stop_stack(stack)


class InBackground:
    """A request running in a thread; ``result()`` waits for it."""

    def __init__(self, method: str, url: str, **kwargs: object) -> None:
        self.response: httpx.Response | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(method, url, kwargs), daemon=True)
        self.thread.start()

    def _run(self, method: str, url: str, kwargs: dict[str, object]) -> None:
        try:
            self.response = httpx.request(method, url, timeout=30, **kwargs)  # type: ignore[arg-type]
        except BaseException as exc:
            self.error = exc

    def result(self, timeout_s: float = 30) -> httpx.Response:
        self.thread.join(timeout_s)
        assert self.response is not None, self.error
        return self.response


# batches ----------------------------------------------------------------------------------------
def test_batches_over_the_limit_are_cut_sent_together_and_joined_in_order(stacks: Callable[..., Stack]) -> None:
    """Limit 4, ten inputs: three requests to TEI, one answer, in order, equal to TEI's own."""
    stack = stacks(batch=4)
    texts = [f"text number {i}" for i in range(10)]
    before = requests_received(stack.small)
    openai_shape = httpx.post(stack.gateway.url("/v1/embeddings"), json={"input": texts, "model": "small"},
                              headers=auth()).json()
    assert requests_received(stack.small) - before == 3
    direct = [v for i in range(0, 10, 4) for v in httpx.post(stack.small.url + "/embed", headers=auth(),
                                                             json={"inputs": texts[i:i + 4]}).json()]
    assert [d["index"] for d in openai_shape["data"]] == list(range(10))
    assert [d["embedding"] for d in openai_shape["data"]] == direct
    assert openai_shape["model"] == "small" and openai_shape["usage"]["prompt_tokens"] > 0
    native = httpx.post(stack.gateway.url("/embed"), json={"inputs": texts}, headers=auth()).json()
    assert native == direct
    tokens = httpx.post(stack.gateway.url("/tokenize"), json={"inputs": texts}, headers=auth()).json()
    assert len(tokens) == 10


def test_rerank_batches_are_joined_and_sorted_again(stacks: Callable[..., Stack]) -> None:
    stack = stacks(batch=4)
    docs = [f"document {i} about {'AI' if i in (2, 7) else 'cats'}" for i in range(10)]
    ranked = httpx.post(stack.gateway.url("/rerank", 1), json={"query": "AI", "texts": docs},
                        headers=auth(RERANK_KEY)).json()
    scores = {r["index"]: r["score"] for r in ranked}
    assert sorted(scores) == list(range(10)) and [r["score"] for r in ranked] == sorted(scores.values(), reverse=True)
    assert {ranked[0]["index"], ranked[1]["index"]} == {2, 7}
    cohere_shape = httpx.post(stack.gateway.url("/v1/rerank", 1), headers=auth(RERANK_KEY),
                              json={"query": "AI", "documents": docs, "top_n": 3}).json()
    assert [(r["index"], r["relevance_score"]) for r in cohere_shape["results"]] == [
        (r["index"], r["score"]) for r in ranked[:3]]


# restarts ---------------------------------------------------------------------------------------
def test_a_request_waits_for_a_restarting_model_and_others_are_unaffected(stacks: Callable[..., Stack]) -> None:
    stack = stacks()
    stack.small.kill()
    waiting = InBackground("POST", stack.gateway.url("/v1/embeddings"), json={"input": "a", "model": "small"},
                           headers=auth())
    started = time.monotonic()
    other = httpx.post(stack.gateway.url("/v1/embeddings"), json={"input": "a", "model": "BAAI/bge-m3"},
                       headers=auth(), timeout=5)
    assert other.status_code == 200 and time.monotonic() - started < 2
    # The waiting request is at the gateway (its connection open there), not merely unsent.
    wait_until(lambda: client_connections(stack.gateway.proc.pid, stack.gateway.ports[0]) == 1, 10)
    assert waiting.thread.is_alive()  # still waiting: nothing listens on small's port
    assert httpx.get(stack.gateway.url("/health")).status_code == 200  # requests wait, so the gateway is fine
    stack.small.start().wait_ready()
    assert waiting.result().status_code == 200
    assert requests_received(stack.small) == 1  # it waited at the gateway, and reached the new TEI once


def test_a_request_whose_tei_dies_under_it_is_not_replayed_into_the_replacement(
        stacks: Callable[..., Stack]) -> None:
    """TEI received it and died: it may be what killed TEI, so the client gets a 502, and the
    replacement never sees it."""
    stack = stacks()
    stack.small.kill()
    stack.small.start(request_delay_s=30).wait_ready()
    in_flight = InBackground("POST", stack.gateway.url("/embed"), json={"inputs": "a"}, headers=auth())
    wait_until(lambda: requests_received(stack.small) == 1, 10)  # the stand-in counts a request on entry
    stack.small.kill()
    stack.small.start().wait_ready()
    response = in_flight.result()
    assert response.status_code == 502 and response.json()["error_type"] == "Backend"
    assert "was not sent again" in response.json()["error"]
    assert requests_received(stack.small) == 0  # the replacement never got it
    assert httpx.post(stack.gateway.url("/embed"), json={"inputs": "b"}, headers=auth()).status_code == 200


def test_a_model_down_for_longer_than_the_wait_gets_503(stacks: Callable[..., Stack]) -> None:
    stack = stacks(wait_s=0.5)
    stack.m3.kill()
    r = httpx.post(stack.gateway.url("/v1/embeddings"), json={"input": "a", "model": "BAAI/bge-m3"}, headers=auth())
    assert r.status_code == 503 and "did not become ready within 0.5 s" in r.json()["error"]["message"]
    assert httpx.post(stack.gateway.url("/embed"), json={"inputs": "a"}, headers=auth()).status_code == 200


def test_health_is_503_until_every_model_was_ready_once(tmp_path: Path) -> None:
    teis = make_teis(tmp_path)
    gateway = start_gateway(tmp_path, stack_models(*teis))
    try:
        r = httpx.get(gateway.url("/health"))
        assert r.status_code == 503 and r.json()["error_type"] == "Unhealthy"
        for tei in teis:
            tei.start()
        gateway.wait_healthy()
    finally:
        gateway.stop()
        for tei in teis:
            tei.kill()


def test_a_busy_model_becomes_ready_once_its_health_answers(tmp_path: Path) -> None:
    """TEI's /health waits behind the batch in progress. A model never seen ready turns ready when its
    /health answers (here: when the 4 s batch ends), not on a silent /health; a request sent meanwhile
    waits and is answered."""
    teis = make_teis(tmp_path)
    for tei in teis:
        tei.start(batch_s=4 if tei.kind == "embed" else 0).wait_ready()
    small = teis[0]

    def hold_the_backend() -> None:
        try:
            httpx.post(small.url + "/embed", json={"inputs": "x"}, headers=auth(), timeout=30)
        except httpx.HTTPError:
            pass  # the stand-in is killed at the end of the test

    busy = threading.Thread(target=hold_the_backend, daemon=True)
    busy.start()
    wait_until(lambda: "te_batch_next_size_count" in httpx.get(small.url + "/metrics").text, timeout_s=5)
    gateway = start_gateway(tmp_path, stack_models(*teis))
    try:
        waiting = InBackground("POST", gateway.url("/embed"), json={"inputs": "a"}, headers=auth())
        gateway.wait_healthy(timeout_s=20)
        assert waiting.result().status_code == 200
    finally:
        gateway.stop()
        for tei in teis:
            tei.kill()


# clients and shutdown ------------------------------------------------------------------------------
def upstream_connections(pid: int, port: int) -> int:
    return sum(1 for c in psutil.Process(pid).net_connections("tcp")
               if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED)


def client_connections(pid: int, port: int) -> int:
    return sum(1 for c in psutil.Process(pid).net_connections("tcp")
               if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED)


def test_a_client_that_hangs_up_cancels_its_upstream_request(stacks: Callable[..., Stack]) -> None:
    stack = stacks()
    stack.small.kill()
    stack.small.start(request_delay_s=30).wait_ready()
    body = b'{"inputs": "a"}'
    with socket.create_connection(("127.0.0.1", stack.gateway.ports[0])) as sock:
        sock.sendall(b"POST /embed HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + EMBED_KEY.encode() +
                     b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() +
                     b"\r\n\r\n" + body)
        wait_until(lambda: requests_received(stack.small) == 1, 10)
        assert upstream_connections(stack.gateway.proc.pid, stack.small.port) == 1
    wait_until(lambda: upstream_connections(stack.gateway.proc.pid, stack.small.port) == 0, 10)


def test_sigterm_finishes_in_flight_requests_then_exits_0(stacks: Callable[..., Stack]) -> None:
    stack = stacks()
    stack.small.kill()
    stack.small.start(request_delay_s=1).wait_ready()
    in_flight = InBackground("POST", stack.gateway.url("/embed"), json={"inputs": "a"}, headers=auth())
    wait_until(lambda: requests_received(stack.small) == 1, 10)
    stack.gateway.proc.send_signal(signal.SIGTERM)
    assert in_flight.result().status_code == 200
    assert stack.gateway.proc.wait(timeout=10) == 0


def test_two_workers_share_the_ports_and_stop_together(stacks: Callable[..., Stack]) -> None:
    """SO_REUSEPORT: both workers listen on both ports; one ready line; SIGTERM stops all with 0."""
    stack = stacks(workers=2)
    gateway = stack.gateway
    workers = psutil.Process(gateway.proc.pid).children()
    assert len(workers) == 2 and gateway.output().count("Gateway ready on") == 1
    for worker in workers:
        listening = {c.laddr.port for c in worker.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
        assert listening == set(gateway.ports)
    for _ in range(20):  # a new connection each: they land on either worker
        assert httpx.post(gateway.url("/embed"), json={"inputs": "a"}, headers=auth()).status_code == 200
    # Each worker that served keeps its keep-alive connection to the TEI: both did (all 20 on one: 2**-19).
    assert all(upstream_connections(w.pid, stack.small.port) >= 1 for w in workers)
    assert gateway.stop() == 0
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)


def test_a_worker_that_dies_takes_the_group_down_for_the_launcher_to_restart(stacks: Callable[..., Stack]) -> None:
    stack = stacks(workers=2)
    workers = psutil.Process(stack.gateway.proc.pid).children()
    workers[0].kill()
    assert stack.gateway.proc.wait(timeout=15) == 1
    assert "gateway worker" in stack.gateway.output()
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)


@pytest.mark.parametrize(("config", "message"), [(None, "EMBED_GATEWAY_CONFIG is not set"),
                                                 ("{", "not JSON"), (json.dumps({"listen": [], "models": []}),
                                                                     "listen: at least one listener")])
def test_a_bad_configuration_exits_2_with_one_error_line(config: str | None, message: str) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if config is not None:
        env["EMBED_GATEWAY_CONFIG"] = config
    done = subprocess.run([sys.executable, "-m", "embed_launcher.gateway"], env=env, capture_output=True, text=True,
                          timeout=30, check=False)
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0]


def test_a_port_in_use_is_one_error_line_and_exit_1(tmp_path: Path) -> None:
    teis = make_teis(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = {"listen": [{"host": "127.0.0.1", "port": port}], "models": stack_models(*teis)}
        done = subprocess.run([sys.executable, "-m", "embed_launcher.gateway"], capture_output=True, text=True,
                              env={"PATH": os.environ.get("PATH", ""), "EMBED_GATEWAY_CONFIG": json.dumps(config)},
                              timeout=30, check=False)
    assert done.returncode == 1 and f"Error: cannot listen on 127.0.0.1:{port}" in done.stdout + done.stderr
