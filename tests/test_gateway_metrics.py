"""The gateway's /metrics (issue 20): its own families from start-up, every TEI's relabelled, a silent TEI
left out within the deadline, EMBED_METRICS_AUTH, and the same totals from every worker."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from conftest import free_ports, wait_until
from gateway_harness import EMBED_KEY, RERANK_KEY, Gateway, Tei, auth, start_gateway
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from test_grafana import exported_families, sample_names

from embed_launcher import __version__
from embed_launcher.gateway import scrape
from embed_launcher.gateway.app import Keys
from embed_launcher.gateway.config import GatewayConfig, ModelRoute
from embed_launcher.gateway.metrics import Metrics
from embed_launcher.gateway.scrape import (
    REASONS,
    STATES,
    Replica,
    Scraper,
    merge,
    relabel,
    replica_families,
    state_of,
    tei_families,
)
from embed_launcher.gateway.serve import serve

OWN = {  # family (as the parser names it) -> its labels
    "embed_requests": {"model", "route", "code"},
    "embed_request_duration_seconds": {"model"},
    "embed_inputs": {"model"},
    "embed_inflight_inputs": {"model", "replica"},
    "embed_gateway_waits": {"model"},
    "embed_gateway_retries": {"model"},
    "embed_batch_splits": {"model"},
    "embed_replica_state": {"model", "replica", "state"},
    "embed_replica_restarts": {"model", "replica", "reason"},
    "embed_up": {"model"},
    "embed_build_info": {"version", "tei_version"},
    "embed_scrape_errors": {"model"},
}
# Three models, two replicas each.
MODELS = [("BAAI/bge-small-en-v1.5", "embed", EMBED_KEY), ("naver/splade", "sparse", EMBED_KEY),
          ("BAAI/bge-reranker-v2-m3", "rerank", RERANK_KEY)]


def dashboard_list_problems(text: str) -> list[str]:
    """The Grafana test's list of exported families (tests/test_grafana.py exported_families) against a
    real answer: every series it believes in is there, with exactly its labels (a rename fails here)."""
    real: dict[str, set[frozenset[str]]] = {}
    for parsed in text_string_to_metric_families(text):
        for sample in parsed.samples:
            real.setdefault(sample.name, set()).add(frozenset(sample.labels) - {"le"})
    listed = exported_families()
    problems = []
    for series, name in sample_names(listed).items():
        if series not in real:
            problems.append(f"{series}: not in /metrics")
        elif real[series] != {listed[name].labels}:
            seen = sorted(map(sorted, real[series]))
            problems.append(f"{series}: labels {seen}, listed {sorted(listed[name].labels)}")
    return problems


def families(text: str) -> dict[str, list[Sample]]:
    """The answer read by prometheus_client's own parser (a malformed line raises)."""
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def value(samples: list[Sample], name: str, **labels: str) -> float:
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


# Units: the pure parts -------------------------------------------------------------------------

TEI_TEXT = """# TYPE te_request_count counter
te_request_count{method="single"} 3

# TYPE te_queue_size gauge
te_queue_size 2

# TYPE te_request_duration histogram
te_request_duration_bucket{le="0.5"} 1
te_request_duration_bucket{le="+Inf"} 3
te_request_duration_sum 0.9
te_request_duration_count 3

"""


def test_relabel_merges_every_teis_families_once_with_model_kind_and_replica() -> None:
    texts = [({"model": "a", "kind": "embed", "replica": "0"}, TEI_TEXT),
             ({"model": "a", "kind": "embed", "replica": "1"}, TEI_TEXT.replace(" 3\n", " 5\n")),
             ({"model": "r", "kind": "rerank", "replica": "0"}, "# TYPE other_family gauge\nother_family 1\n")]
    merged = relabel(texts)
    assert [f.name for f in merged] == ["te_request_count", "te_queue_size", "te_request_duration"]  # te_* only
    counts = merged[0].samples
    assert {(s.labels["replica"], s.value) for s in counts} == {("0", 3.0), ("1", 5.0)}
    assert all(s.labels["method"] == "single" and s.labels["kind"] == "embed" for s in counts)
    assert len(merged[2].samples) == 8  # two replicas' buckets, sum and count


def test_a_text_the_parser_refuses_leaves_that_tei_out_only() -> None:
    merged = relabel([({"replica": "0"}, "te_queue_size{oops 1\n"), ({"replica": "1"}, TEI_TEXT)])
    assert {s.labels["replica"] for f in merged for s in f.samples} == {"1"}


def test_one_teis_families_carry_its_labels_and_merge_as_relabel_does() -> None:
    labels = {"model": "a", "kind": "embed", "replica": "0"}
    families = tei_families(labels, TEI_TEXT + "# TYPE other_family gauge\nother_family 1\n")
    assert [f.name for f in families] == ["te_request_count", "te_queue_size", "te_request_duration"]
    assert all(s.labels.items() >= labels.items() for f in families for s in f.samples)
    for refused in ("te_queue_size{oops 1\n", "# TYPE te_queue_size\n"):  # ValueError, IndexError in the parser
        assert tei_families(labels, refused) == []  # that TEI is left out, the answer goes on
    other = tei_families({"model": "a", "kind": "embed", "replica": "1"}, TEI_TEXT)
    assert merge([families, other]) == relabel([(labels, TEI_TEXT), ({**labels, "replica": "1"}, TEI_TEXT)])


class StaggeredScraper(Scraper):
    """Two replicas of one model: the second answers only once the first's text has been parsed."""

    def __init__(self, parsed: asyncio.Event) -> None:
        config = GatewayConfig.from_dict({"listen": [{"host": "127.0.0.1", "port": 1}], "scrape_timeout_s": 2,
                                          "models": [{"name": "m", "kind": "embed", "upstream": "http://127.0.0.1:2",
                                                      "default": True}]})
        super().__init__(config, {}, Metrics(config, environ={}))
        self.parsed, self.tei_version = parsed, "1.9.3"
        model = config.models[0]
        self.both = [Replica(model, n, f"http://127.0.0.1:{7001 + n}", {}) for n in (0, 1)]

    def replicas(self) -> list[tuple[Replica, bool]]:
        return [(replica, True) for replica in self.both]

    async def fetch(self, url: str, headers: Mapping[str, str]) -> str | None:
        if url.startswith(self.both[1].base):
            await self.parsed.wait()
        return TEI_TEXT


def test_each_teis_text_is_parsed_as_soon_as_it_arrives(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parsing after the slowest TEI would leave the second replica out here (it answers only once the first
    replica's text is parsed; past the deadline otherwise)."""

    async def scrape_both() -> bytes:
        parsed = asyncio.Event()

        def parse(labels: Mapping[str, str], text: str) -> list[Metric]:
            families = tei_families(labels, text)
            parsed.set()
            return families

        monkeypatch.setattr(scrape, "tei_families", parse)
        return await StaggeredScraper(parsed).render()

    began = time.monotonic()
    found = families(asyncio.run(scrape_both()).decode())
    assert {s.labels["replica"] for s in found["te_request_count"]} == {"0", "1"}
    assert value(found["embed_scrape_errors"], "embed_scrape_errors_total") == 0
    assert time.monotonic() - began < 2  # within the deadline, not at it


def test_start_up_objects_are_frozen_before_the_gateway_says_ready() -> None:
    """gc.freeze() at start-up (gateway/serve.py settle_heap): the full collections that /metrics' many
    short-lived samples trigger then skip the start-up heap (the answer's p99, benchmarks/metrics_bench.py)."""
    listen, tei = free_ports(2)
    config = GatewayConfig.from_dict({"listen": [{"host": "127.0.0.1", "port": listen}], "models": [
        {"name": "m", "kind": "embed", "upstream": f"http://127.0.0.1:{tei}", "default": True}]})
    frozen: list[int] = []

    async def start_and_stop() -> None:
        stop = asyncio.Event()

        def ready() -> None:
            frozen.append(gc.get_freeze_count())
            stop.set()

        await serve(config, Keys(), reuse_port=False, ready=ready, stop=stop)

    try:
        asyncio.run(start_and_stop())
    finally:
        gc.unfreeze()
    assert frozen and frozen[0] > 0


@pytest.mark.parametrize(("entry", "word"), [
    (None, "unknown"), ({"state": "running", "health": "busy"}, "busy"),
    ({"state": "running", "health": None}, "ready"),
    ({"state": "backoff"}, "backoff"), ({"state": "fatal", "gave_up": True}, "gave_up"), ({"state": "odd"}, "unknown"),
])
def test_state_words(entry: dict[str, object] | None, word: str) -> None:
    assert state_of(entry) == word and word in STATES


def test_replica_families_from_the_launchers_status_matched_by_port() -> None:
    model = ModelRoute("m", "embed", "http://127.0.0.1:7001", replicas=("http://127.0.0.1:7001", "http://127.0.0.1:7002"))
    replicas = [Replica(model, 0, "http://127.0.0.1:7001", {}), Replica(model, 1, "http://127.0.0.1:7002", {})]
    status = {"services": {"embed#0": {"port": 7001, "state": "backoff", "restarts": 2,
                                       "restarts_by_reason": {"crash": 1, "hung": 1}},
                           "embed#1": {"port": 7002, "state": "running", "health": "ready", "restarts": 0}}}
    found = {f.name: f.samples for f in replica_families(replicas, status, {}, "1.9.3")}
    states = {(s.labels["replica"], s.labels["state"]) for s in found["embed_replica_state"] if s.value == 1}
    assert states == {("0", "backoff"), ("1", "ready")} and len(found["embed_replica_state"]) == 2 * len(STATES)
    restarts = {(s.labels["replica"], s.labels["reason"]): s.value for s in found["embed_replica_restarts"]}
    zeros = {(r, reason): 0.0 for r in "01" for reason in REASONS}
    assert restarts == {**zeros, ("0", "crash"): 1.0, ("0", "hung"): 1.0}
    assert [s.value for s in found["embed_up"]] == [1.0]
    assert found["embed_build_info"][0].labels == {"version": __version__, "tei_version": "1.9.3"}
    # no status: the gateway's own view of which replicas take requests
    down = {f.name: f.samples for f in replica_families(replicas, None, {("m", 0): False, ("m", 1): False}, "x")}
    assert [s.value for s in down["embed_up"]] == [0.0]


# Real processes: three models of two replicas each, behind the gateway -----------------------

def start_teis(tmp: Path) -> list[Tei]:
    ports = free_ports(6)
    teis = [Tei(tmp, name, kind, ports[2 * i + r], key) for i, (name, kind, key) in enumerate(MODELS) for r in (0, 1)]
    for tei in teis:
        tei.start()
    for tei in teis:
        tei.wait_ready()
    return teis


def entries(teis: list[Tei]) -> list[dict[str, object]]:
    return [{"name": teis[i].name, "aliases": [], "kind": teis[i].kind, "upstream": teis[i].url,
             "replicas": [teis[i].url, teis[i + 1].url], "max_client_batch_size": 4, "default": True}
            for i in (0, 2, 4)]


@pytest.fixture
def teis(tmp_path: Path) -> Iterator[list[Tei]]:
    started = start_teis(tmp_path)
    yield started
    for tei in started:
        if tei.proc is not None and tei.proc.poll() is None:
            tei.proc.send_signal(signal.SIGCONT)  # a stopped one must be able to die
        tei.kill()


def stop(gateway: Gateway) -> None:
    try:
        gateway.stop()
    finally:
        if gateway.proc.poll() is None:
            gateway.proc.kill()
            gateway.proc.wait()


def write_status(path: Path, teis: list[Tei]) -> None:
    services = {f"{t.kind}#{i % 2}": {"port": t.port, "state": "running", "health": "ready", "restarts": 1,
                                     "restarts_by_reason": {"hung": 1}} for i, t in enumerate(teis)}
    path.write_text(json.dumps({"services": services}))


def work(gateway: Gateway, teis: list[Tei]) -> None:
    """Requests that reach both replicas of every model (least-inputs takes ties in turn)."""
    for _ in range(4):
        assert httpx.post(gateway.url("/v1/embeddings"), json={"input": ["a"] * 6, "model": MODELS[0][0]},
                          headers=auth()).status_code == 200
        assert httpx.post(gateway.url("/embed_sparse"), json={"inputs": "a"}, headers=auth()).status_code == 200
        assert httpx.post(gateway.url("/rerank"), json={"query": "q", "texts": ["a", "b"]},
                          headers=auth(RERANK_KEY)).status_code == 200


@pytest.mark.integration
@pytest.mark.parametrize("workers", [1, 2])
def test_every_family_is_present_at_zero_from_start_up_then_counts(tmp_path: Path, teis: list[Tei],
                                                                   workers: int) -> None:
    status = tmp_path / ".status.json"
    write_status(status, teis)
    gateway = start_gateway(tmp_path, entries(teis), status_file=str(status), workers=workers)
    try:
        gateway.wait_healthy()
        answer = httpx.get(gateway.url("/metrics"))
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
        found = families(answer.text)
        for name, labels in OWN.items():
            assert found.get(name), f"{name} missing at start-up"
            assert all(set(s.labels) - {"le"} == labels for s in found[name]), (name, found[name][0])
        for name in ("embed_requests", "embed_inputs", "embed_gateway_waits", "embed_gateway_retries",
                     "embed_batch_splits", "embed_inflight_inputs", "embed_scrape_errors"):
            assert all(s.value == 0 for s in found[name] if s.labels["model"]), name  # /health has none
        models = {m for m, _, _ in MODELS}
        assert {s.labels["model"] for s in found["embed_inputs"]} == models
        assert {(s.labels["model"], s.labels["replica"]) for s in found["embed_inflight_inputs"]} == {
            (m, r) for m in models for r in "01"}
        assert value(found["embed_up"], "embed_up") == 3
        assert value(found["embed_replica_restarts"], "embed_replica_restarts_total", reason="hung") == 6
        assert value(found["embed_replica_state"], "embed_replica_state", state="ready") == 6

        work(gateway, teis)
        found = families(httpx.get(gateway.url("/metrics", 1)).text)  # the reranker's door: the same answer
        small = MODELS[0][0]
        assert value(found["embed_requests"], "embed_requests_total", model=small, route="/v1/embeddings",
                     code="200") == 4
        assert value(found["embed_inputs"], "embed_inputs_total", model=small) == 24
        assert value(found["embed_batch_splits"], "embed_batch_splits_total", model=small) == 4  # 6 inputs, batch 4
        assert value(found["embed_request_duration_seconds"], "embed_request_duration_seconds_count", model=small) == 4
        assert found["embed_build_info"][0].labels == {"version": __version__, "tei_version": "1.9.3"}
        # TEI's families: every model, both replicas, with its kind; HELP and TYPE once per family
        seen = {(s.labels["model"], s.labels["kind"], s.labels["replica"]) for s in found["te_request_count"]}
        assert seen == {(m, k, r) for m, k, _ in MODELS for r in "01"}
        text = httpx.get(gateway.url("/metrics")).text
        assert text.count("# TYPE te_request_count_total counter") == 1
        assert text.count("# TYPE embed_requests_total counter") == 1
        # A request TEI itself refuses, so its te_request_failure family has a sample too (TEI registers a
        # counter on its first increment)
        refused = httpx.post(gateway.url("/embed"), json={"inputs": ""}, headers=auth())
        assert refused.status_code == 400 and refused.json()["error_type"] == "Empty", refused.text
        assert dashboard_list_problems(httpx.get(gateway.url("/metrics")).text) == []
    finally:
        stop(gateway)


@pytest.mark.integration
def test_a_silent_tei_is_left_out_within_the_deadline_and_counted(tmp_path: Path, teis: list[Tei]) -> None:
    gateway = start_gateway(tmp_path, entries(teis), scrape_timeout_s=0.5)
    try:
        gateway.wait_healthy()
        work(gateway, teis)
        silent = teis[1]  # the first model's second replica
        assert silent.proc is not None
        os.kill(silent.proc.pid, signal.SIGSTOP)
        began = time.monotonic()
        answer = httpx.get(gateway.url("/metrics"), timeout=10)
        took = time.monotonic() - began
        assert answer.status_code == 200 and took < 0.5 + 0.5, took  # the deadline, and a margin for a slow CI
        found = families(answer.text)
        replicas = {(s.labels["model"], s.labels["replica"]) for s in found["te_request_count"]}
        assert (silent.name, "1") not in replicas and (silent.name, "0") in replicas and len(replicas) == 5
        assert value(found["embed_scrape_errors"], "embed_scrape_errors_total", model=silent.name) == 1
        assert value(found["embed_scrape_errors"], "embed_scrape_errors_total") == 1
        os.kill(silent.proc.pid, signal.SIGCONT)
        wait_until(lambda: ("1" in {s.labels["replica"] for s in families(httpx.get(gateway.url("/metrics")).text)
                                    ["te_request_count"] if s.labels["model"] == silent.name}), timeout_s=5)
    finally:
        stop(gateway)


@pytest.mark.integration
def test_metrics_auth_needs_a_key_with_the_metrics_scope(tmp_path: Path, teis: list[Tei]) -> None:
    gateway = start_gateway(tmp_path, entries(teis), metrics_auth=True)
    try:
        for port in (0, 1):
            assert httpx.get(gateway.url("/metrics", port)).status_code == 401
            assert httpx.get(gateway.url("/metrics", port), headers=auth(RERANK_KEY)).status_code == 403
            answer = httpx.get(gateway.url("/metrics", port), headers=auth(EMBED_KEY))  # the default key's scopes
            assert answer.status_code == 200 and "embed_up" in answer.text
        assert httpx.get(gateway.url("/health")).status_code in (200, 503)  # still public
    finally:
        stop(gateway)


@pytest.mark.integration
def test_metrics_auth_with_no_key_at_all_stays_closed(tmp_path: Path, teis: list[Tei]) -> None:
    gateway = start_gateway(tmp_path, entries(teis), keys=None, metrics_auth=True)
    try:
        assert httpx.get(gateway.url("/metrics")).status_code == 401
    finally:
        stop(gateway)


@pytest.mark.integration
def test_every_worker_answers_the_same_totals(tmp_path: Path, teis: list[Tei]) -> None:
    gateway = start_gateway(tmp_path, entries(teis), workers=2, env={"TMPDIR": str(tmp_path)})
    try:
        gateway.wait_healthy()
        sent = 24
        for _ in range(sent):  # a new connection each: SO_REUSEPORT spreads them over both workers
            with httpx.Client() as client:
                assert client.post(gateway.url("/embed"), json={"inputs": "a"}, headers=auth()).status_code == 200
        totals = set()
        for _ in range(16):  # both workers answer some of these (all on one: a 1 in 32,768 chance)
            with httpx.Client() as client:
                found = families(client.get(gateway.url("/metrics")).text)
            totals.add((value(found["embed_requests"], "embed_requests_total", route="/embed", code="200"),
                        value(found["embed_inputs"], "embed_inputs_total"),
                        value(found["embed_inflight_inputs"], "embed_inflight_inputs")))
        assert totals == {(sent, sent, 0)}
    finally:
        stop(gateway)
    assert not list(tmp_path.glob("embed-gateway-metrics-*"))


@pytest.mark.integration
def test_waits_and_retries_are_counted(tmp_path: Path, teis: list[Tei]) -> None:
    """Both replicas of a model killed: the request is refused by each (sent again: retries), then waits for
    one to come back (a wait), and is answered."""
    gateway = start_gateway(tmp_path, entries(teis))
    try:
        gateway.wait_healthy()
        splade = [t for t in teis if t.kind == "sparse"]
        for tei in splade:
            tei.kill()
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(httpx.post, gateway.url("/embed_sparse"), json={"inputs": "a"}, headers=auth(),
                                  timeout=20)
            wait_until(lambda: value(families(httpx.get(gateway.url("/metrics")).text)["embed_gateway_waits"],
                                     "embed_gateway_waits_total", model=splade[0].name) == 1)
            splade[0].start()
            assert pending.result().status_code == 200
        found = families(httpx.get(gateway.url("/metrics")).text)
        assert value(found["embed_gateway_retries"], "embed_gateway_retries_total", model=splade[0].name) >= 1
        assert value(found["embed_gateway_waits"], "embed_gateway_waits_total") == 1
        assert value(found["embed_up"], "embed_up", model=splade[0].name) == 1
    finally:
        stop(gateway)
