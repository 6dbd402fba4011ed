"""Under concurrent load, a SIGKILLed embeddings child heals while the reranker answers every request."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil
import pytest
from conftest import LauncherRun, wait_until

pytestmark = pytest.mark.integration

Launch = Callable[..., LauncherRun]

KEY = "load-test-key"
CLIENTS_PER_SERVICE = 8  # 16 threads in all, on a 2-core machine
MAX_REQUESTS_PER_CLIENT = 2000  # bounded by count...
RUN_LIMIT_S = 60.0  # ...and by time (a deadline: the clients are stopped as soon as the checks are done)
CLIENT_TIMEOUT_S = 30.0  # a request slower than this counts as hung (generous: the machine may be loaded)
RETRY_PAUSE_S = 0.05  # after a failure, like a real client: refused connections fail instantly
WARMUP_REQUESTS = 20  # per service, before the kill, so the kill lands mid-run
ROUTES = {
    "embed": ("/v1/embeddings", {"input": ["load test"]}),
    "rerank": ("/rerank", {"query": "q", "texts": ["a", "b"]}),
}


@dataclass(frozen=True)
class Outcome:
    """One request: which service, when it started and ended (monotonic), and its status or error name."""

    service: str
    started: float
    ended: float
    result: int | str


def request_once(port: int, service: str) -> int | str:
    """POST one request with the key; the HTTP status, or the exception's class name."""
    path, body = ROUTES[service]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT_S)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}", "Connection": "close"}
    try:
        conn.request("POST", path, json.dumps(body), headers)
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException) as exc:
        return type(exc).__name__
    finally:
        conn.close()


class Load:
    """Client threads hammering both services until stopped, out of requests, or out of time."""

    def __init__(self, ports: dict[str, int]) -> None:
        self.ports = ports
        self.outcomes: list[Outcome] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.deadline = time.monotonic() + RUN_LIMIT_S
        self.threads = [
            threading.Thread(target=self.client, args=(service,), name=f"client-{service}-{i}", daemon=True)
            for service in ports
            for i in range(CLIENTS_PER_SERVICE)
        ]

    def client(self, service: str) -> None:
        for _ in range(MAX_REQUESTS_PER_CLIENT):
            if self.stop.is_set() or time.monotonic() >= self.deadline:
                return
            started = time.monotonic()
            result = request_once(self.ports[service], service)
            with self.lock:
                self.outcomes.append(Outcome(service, started, time.monotonic(), result))
            if result != 200:
                self.stop.wait(RETRY_PAUSE_S)

    def of(self, service: str) -> list[Outcome]:
        with self.lock:
            return [o for o in self.outcomes if o.service == service]

    def ok_after(self, service: str, moment: float) -> bool:
        return any(o.result == 200 and o.started > moment for o in self.of(service))

    def join(self) -> list[str]:
        """Stop the clients and wait for them; the names of any thread still running."""
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=CLIENT_TIMEOUT_S + 2)
        return [t.name for t in self.threads if t.is_alive()]


def expect(run: LauncherRun, predicate: Callable[[], object], timeout_s: float, what: str) -> None:
    """wait_until, failing with a readable reason and the launcher's last output lines."""
    try:
        wait_until(predicate, timeout_s)
    except AssertionError:
        tail = "\n".join(run.output().splitlines()[-25:])
        raise AssertionError(f"{what} within {timeout_s} s; launcher output ends:\n{tail}") from None


def test_sibling_serves_every_request_while_the_killed_child_heals(launch: Launch) -> None:
    """16 clients on both services; kill -9 the embeddings TEI: rerank all 200, embeddings 200 again, no hang."""
    # TEI direct (the gateway's version of this is test_many_models_e2e's kill under load)
    run = launch({"RERANK_ENABLED": "true", "EMBED_API_KEY": KEY, "EMBED_GATEWAY": "false"})
    run.wait_for("Text embeddings & reranking server is ready")
    load = Load({"embed": run.ports["EMBED_PORT"], "rerank": run.ports["RERANK_PORT"]})
    for thread in load.threads:
        thread.start()
    try:
        wait_until(lambda: all(len(load.of(s)) >= WARMUP_REQUESTS for s in ("embed", "rerank")), 30)
        old = run.child_pid("embed")
        killed_at = time.monotonic()
        psutil.Process(old).kill()

        def healed() -> bool:
            return load.ok_after("embed", killed_at) and run.child_pid("embed") != old

        expect(run, healed, RUN_LIMIT_S, "embeddings did not answer 200 again after the kill")
        recovered_at = time.monotonic()
        wait_until(lambda: len([o for o in load.of("rerank") if o.started > recovered_at]) >= WARMUP_REQUESTS, 30)
    finally:
        hung = load.join()
    assert not hung, f"client threads still running: {hung}"
    rerank, embed = load.of("rerank"), load.of("embed")
    failed = [o for o in rerank if o.result != 200]
    assert not failed, f"{len(failed)} of {len(rerank)} rerank requests failed, e.g. {failed[:3]}"
    assert any(killed_at < o.started and o.ended < recovered_at for o in rerank), "no rerank request during the outage"
    assert all(o.result == 200 for o in embed if o.ended < killed_at), "embeddings failed before the kill"
    assert any(o.result != 200 for o in embed if o.started < recovered_at and o.ended > killed_at), "kill not seen"
    assert all(o.ended - o.started < CLIENT_TIMEOUT_S + 1 for o in load.outcomes), "a request outlived its timeout"
    run.wait_for("Embeddings server is ready again (restart 1).", 30)
    assert run.proc.poll() is None, f"launcher exited:\n{run.output()}"
