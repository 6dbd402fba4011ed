"""The gateway balances a model's replicas: least-inputs (fewest inputs in flight, ties in turn) or round-robin;
only ready replicas get new work; a request no TEI received goes to another replica; chunks spread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import wait_until
from gateway_harness import EMBED_KEY, Tei, auth, free_ports, requests_received, start_gateway

from embed_launcher.gateway.config import GatewayConfig, GatewayConfigError, ModelRoute
from embed_launcher.gateway.upstream import Upstream

pytestmark = pytest.mark.integration
NAME = "BAAI/bge-small-en-v1.5"


# -- the choice, as a unit ----------------------------------------------------------------------

def pool(balance: str, count: int = 3) -> Upstream:
    urls = tuple(f"http://127.0.0.1:{20000 + i}" for i in range(count))
    return Upstream(ModelRoute(NAME, "embed", urls[0], replicas=urls), None, 1.0, balance=balance)


def picks(upstream: Upstream, n: int) -> list[int]:
    chosen = []
    for _ in range(n):
        replica = upstream.pick()
        chosen.append(-1 if replica is None else replica.number)
    return chosen


def test_least_inputs_picks_the_fewest_inputs_in_flight_and_ties_go_in_turn() -> None:
    upstream = pool("least-inputs")
    for replica in upstream.replicas:
        replica.ready.set()
    assert picks(upstream, 6) == [0, 1, 2, 0, 1, 2]  # all idle: in turn
    upstream.replicas[0].inputs, upstream.replicas[1].inputs, upstream.replicas[2].inputs = 512, 3, 40
    assert picks(upstream, 3) == [1, 1, 1]  # a batch of 512 is not one unit of work
    upstream.replicas[1].inputs = 600
    assert picks(upstream, 2) == [2, 2]  # the busy ones still count, by their load


def test_only_ready_replicas_get_work() -> None:
    for balance in ("least-inputs", "round-robin"):
        upstream = pool(balance)
        assert picks(upstream, 2) == [-1, -1]  # none ready yet: requests wait
        upstream.replicas[1].ready.set()
        upstream.replicas[1].inputs = 10_000  # busy, but the only one ready: it still gets work
        assert picks(upstream, 3) == [1, 1, 1]
        upstream.replicas[2].ready.set()
        upstream.replicas[1].ready.clear()  # restarting: refused a connection
        assert picks(upstream, 2) == [2, 2]


def test_round_robin_ignores_load() -> None:
    upstream = pool("round-robin")
    for replica in upstream.replicas:
        replica.ready.set()
    upstream.replicas[0].inputs = 10_000
    assert picks(upstream, 6) == [0, 1, 2, 0, 1, 2]


def test_the_config_carries_the_pool_and_the_policy() -> None:
    urls = ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    listen = [{"host": "127.0.0.1", "port": 8000}]
    model = {"name": NAME, "kind": "embed", "upstream": urls[0], "replicas": urls, "default": True}
    config = GatewayConfig.from_dict({"listen": listen, "models": [model], "balance": "round-robin"})
    assert config.models[0].upstreams == tuple(urls) and config.balance == "round-robin"
    assert GatewayConfig.from_json(config.to_json()) == config
    for bad, words in (({"balance": "random"}, "balance"), ({"models": [{**model, "replicas": [urls[1], urls[0]]}]},
                       "the first must be the upstream"), ({"models": [{**model, "replicas": [urls[0], urls[0]]}]},
                       "the same TEI twice"), ({"models": [{**model, "replicas": [urls[0], 3]}]}, "expected strings")):
        with pytest.raises(GatewayConfigError, match=words):
            GatewayConfig.from_dict({"listen": listen, "models": [model], **bad})


def test_a_pool_with_no_ready_replica_says_so_after_the_wait() -> None:
    async def scenario() -> str:
        upstream = pool("least-inputs", 2)
        await upstream.start()  # nothing listens on those ports: never ready
        try:
            await upstream.send("POST", "/embed", b"{}")
        except Exception as exc:  # the message is what is checked
            return str(exc)
        finally:
            await upstream.close()
        return ""

    message = asyncio.run(scenario())
    assert message == f"model `{NAME}` is not available: none of its 2 servers did become ready within 1 s"


# -- with real processes ------------------------------------------------------------------------

def replicas(tmp: Path, batch_s: list[float], batch: int = 512) -> list[Tei]:
    ports = free_ports(len(batch_s))
    teis = [Tei(tmp, NAME, "embed", port, EMBED_KEY, batch, knobs={"FAKE_TEI_BATCH_S": str(s)})
            for port, s in zip(ports, batch_s, strict=True)]
    for tei in teis:
        tei.start()
    for tei in teis:
        tei.wait_ready()
    return teis


def entry(teis: list[Tei]) -> dict[str, object]:
    urls = [t.url for t in teis]
    return {"name": NAME, "aliases": [], "kind": "embed", "upstream": urls[0], "replicas": urls,
            "max_client_batch_size": teis[0].batch, "default": True}


@pytest.fixture
def three(tmp_path: Path) -> Iterator[list[Tei]]:
    """Three replicas: batch times 50 ms, 150 ms and 300 ms (the sleep of the backend thread, not CPU)."""
    teis = replicas(tmp_path, [0.05, 0.15, 0.3])
    yield teis
    for tei in teis:
        tei.kill()


def load(url: str, clients: int, per_client: int, inputs: int) -> list[int]:
    statuses: list[int] = []

    def client() -> None:
        with httpx.Client(timeout=60) as http:
            for _ in range(per_client):
                statuses.append(http.post(url, json={"inputs": ["x"] * inputs}, headers=auth()).status_code)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return statuses


@pytest.mark.parametrize("balance", ["least-inputs", "round-robin"])
def test_three_replicas_of_different_speeds_share_the_load(three: list[Tei], tmp_path: Path, balance: str) -> None:
    """Same load both ways: least-inputs sends most to the fastest; round-robin sends each the same share."""
    gateway = start_gateway(tmp_path, [entry(three)], balance=balance)
    try:
        gateway.wait_healthy()
        statuses = load(gateway.url("/embed"), clients=4, per_client=15, inputs=4)
    finally:
        gateway.stop()
    assert statuses == [200] * 60
    fast, middle, slow = (requests_received(t) for t in three)
    assert fast + middle + slow == 60
    if balance == "round-robin":
        assert max(fast, middle, slow) - min(fast, middle, slow) <= 1, (fast, middle, slow)
    else:
        assert fast > middle > slow and fast >= 2 * slow, (fast, middle, slow)


def test_a_replica_killed_while_idle_costs_no_request(tmp_path: Path) -> None:
    """Its pooled connections are dead and its port refuses: nothing was sent, so each request goes to the
    other replica, which serves every one."""
    teis = replicas(tmp_path, [0.0, 0.0])
    gateway = start_gateway(tmp_path, [entry(teis)])
    try:
        gateway.wait_healthy()
        assert load(gateway.url("/embed"), clients=4, per_client=5, inputs=1) == [200] * 20
        teis[0].kill()
        before = requests_received(teis[1])
        assert load(gateway.url("/embed"), clients=4, per_client=10, inputs=1) == [200] * 40
        assert requests_received(teis[1]) == before + 40
    finally:
        gateway.stop()
        for tei in teis:
            tei.kill()


def test_the_chunks_of_a_split_batch_spread_over_the_replicas(tmp_path: Path) -> None:
    """12 inputs, batches of 4: three chunks in flight at once, one to each replica."""
    teis = replicas(tmp_path, [0.2, 0.2, 0.2], batch=4)
    gateway = start_gateway(tmp_path, [entry(teis)])
    try:
        gateway.wait_healthy()
        answer = httpx.post(gateway.url("/embed"), json={"inputs": [f"t{i}" for i in range(12)]}, headers=auth(),
                            timeout=30)
        assert answer.status_code == 200 and len(answer.json()) == 12
        assert [requests_received(t) for t in teis] == [1, 1, 1]
    finally:
        gateway.stop()
        for tei in teis:
            tei.kill()


def test_an_unhealthy_replica_gets_no_new_work_after_its_first_error(tmp_path: Path) -> None:
    """A replica whose backend broke answers 424 (and /health 503) until the supervisor replaces it: after its
    first error answer it is marked down (until its /health answers 200), so its siblings take the rest."""
    teis = replicas(tmp_path, [0.0, 0.0, 0.0])
    gateway = start_gateway(tmp_path, [entry(teis)])
    try:
        gateway.wait_healthy()
        (tmp_path / "broken").write_text("503")
        teis[1].kill()
        teis[1].knobs["FAKE_TEI_HEALTH_FILE"] = str(tmp_path / "broken")
        teis[1].start()
        wait_until(lambda: _health(teis[1]) == 503, 10)
        statuses = load(gateway.url("/embed"), clients=3, per_client=10, inputs=2)
        # Each client meets it at most once (three at once, before the first answer marks it down).
        assert len(statuses) == 30 and statuses.count(200) + statuses.count(424) == 30, statuses
        assert statuses.count(424) <= 3, statuses
    finally:
        gateway.stop()
        for tei in teis:
            tei.kill()


def _health(tei: Tei) -> int:
    try:
        return httpx.get(tei.url + "/health", timeout=2).status_code
    except httpx.HTTPError:
        return 0
