"""The stand-in's backend under load and when it breaks: busy, hung and unhealthy, as TEI 1.9.3 behaves.

Real processes and sockets on 127.0.0.1; every wait is a poll with a deadline.
"""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fake_tei.metrics import DURATION_BUCKETS, Metrics, rust_f64
from test_fake_tei import Fake, base_env, http, write_model

UNHEALTHY_BODY = b'{"error":"unhealthy","error_type":"Unhealthy"}'
FAILURE = "Backend error: fake inference failure (FAKE_TEI_HEALTH_FILE says 503)"
EMBED_FAILURE_BODY = ('{"error":"' + FAILURE + '","error_type":"Backend"}').encode()
OPENAI_FAILURE_BODY = ('{"message":"' + FAILURE + '","code":424,"type":"Backend"}').encode()
LINE = re.compile(r"^([a-z_]+)(\{[^}]*\})? (\S+)$")


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Fake]]:
    """An embedding fake with the given knobs; killed at teardown, and its clients' threads joined."""
    started: list[Fake] = []

    def _start(**env: str) -> Fake:
        fake = Fake(["--model-id", str(write_model(tmp_path / "m"))], base_env(tmp_path, **env))
        started.append(fake)
        return fake.ready()

    yield _start
    for fake in started:
        fake.stop()


def scrape(fake: Fake) -> dict[str, float]:
    """What the launcher's probe reads: each `name` summed over its label sets (the probe's own parse)."""
    began = time.monotonic()
    status, headers, body = http("GET", fake.url("/metrics"))
    assert status == 200 and headers["content-type"] == "text/plain; charset=utf-8"
    assert time.monotonic() - began < 0.2, "/metrics must answer at once, whatever the backend does"
    values: dict[str, float] = {}
    for line in body.decode().splitlines():
        match = LINE.match(line)
        if match and "le=" not in (match.group(2) or ""):
            values[match.group(1)] = values.get(match.group(1), 0.0) + float(match.group(3))
    return values


def scrape_until(fake: Fake, done: Callable[[dict[str, float]], bool], timeout: float = 5.0,
                 seen: list[dict[str, float]] | None = None) -> dict[str, float]:
    """Scrape every 10 ms until `done(values)`; keep every scrape in `seen`; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        values = scrape(fake)
        if seen is not None:
            seen.append(values)
        if done(values):
            return values
        assert time.monotonic() < deadline, f"metrics never got there: {values}"
        time.sleep(0.01)


def has(**want: float) -> Callable[[dict[str, float]], bool]:
    return lambda values: all(values.get(name, 0) == value for name, value in want.items())


def post_in_background(fake: Fake, path: str, body: object, results: list[int]) -> threading.Thread:
    def call() -> None:
        try:
            results.append(http("POST", fake.url(path), body, timeout=60)[0])  # a hung backend holds it
        except OSError:  # the fake was killed under a hung request
            results.append(-1)
    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread


def timed_health(fake: Fake, timeout: float) -> tuple[int | None, float]:
    """(status, seconds) of GET /health; status None when the client timed out."""
    began = time.monotonic()
    try:
        with urllib.request.urlopen(fake.url("/health"), timeout=timeout) as resp:
            status: int | None = resp.status
    except urllib.error.HTTPError as err:
        status = err.code
    except (TimeoutError, urllib.error.URLError) as err:
        assert isinstance(err, TimeoutError) or isinstance(err.reason, TimeoutError), err
        status = None
    return status, time.monotonic() - began


# the exporter's text ------------------------------------------------------------------------------
def test_metrics_render_like_metrics_exporter_prometheus_0_15() -> None:
    """Types, cumulative buckets with TEI's bounds, `+Inf`, `_sum`/`_count`, Rust number formatting."""
    metrics = Metrics(max_input_length=512)
    metrics.counter("te_request_success", method="single")
    metrics.counter("te_request_failure", 2, err="inference")
    metrics.gauge_set("te_queue_size", 3.0)
    metrics.record("te_batch_next_size", 3.0, 0.0)
    metrics.record("te_request_inference_duration", 0.5)
    text = metrics.render()
    assert text.startswith('# TYPE te_request_failure counter\nte_request_failure{err="inference"} 2\n\n'
                           '# TYPE te_request_success counter\nte_request_success{method="single"} 1\n\n'
                           "# TYPE te_queue_size gauge\nte_queue_size 3\n\n# TYPE te_batch_next_size histogram\n"
                           'te_batch_next_size_bucket{le="1"} 1\nte_batch_next_size_bucket{le="2"} 1\n'
                           'te_batch_next_size_bucket{le="4"} 2\n')
    assert ('te_batch_next_size_bucket{le="4096"} 2\nte_batch_next_size_bucket{le="+Inf"} 2\n'
            "te_batch_next_size_sum 3\nte_batch_next_size_count 2\n\n") in text
    assert 'te_request_inference_duration_bucket{le="0.000015000000000000002"} 0\n' in text
    assert "te_request_inference_duration_sum 0.5\nte_request_inference_duration_count 1\n" in text
    assert len(DURATION_BUCKETS) == 35 and rust_f64(DURATION_BUCKETS[-1]) == "14.561096060497142"
    assert 'te_request_input_length_bucket{le="512"}' not in text  # only what was recorded renders
    assert Metrics(512).render() == ""  # nothing touched yet: TEI's /metrics is empty after Ready


# busy ---------------------------------------------------------------------------------------------
def test_busy_backend_runs_one_batch_at_a_time_and_health_waits_behind_it(start: Callable[..., Fake]) -> None:
    """FAKE_TEI_BATCH_S=0.5, three requests at once: one backend thread, FIFO; /metrics answers at once and
    moves per completed batch; te_queue_size counts the one request behind the running and prefetched
    batches; /health waits for the batch in progress only, not for the queued one."""
    fake = start(FAKE_TEI_BATCH_S="0.5")
    assert http("GET", fake.url("/metrics"))[2] == b""
    results: list[int] = []
    clients = [post_in_background(fake, "/embed", {"inputs": f"text {i}"}, results) for i in range(3)]
    seen: list[dict[str, float]] = []
    scrape_until(fake, lambda m: m.get("te_request_success", 0) >= 1, seen=seen)
    health, waited = timed_health(fake, timeout=5)   # asked as batch 2 starts: waits for it, not for batch 3
    after_health = scrape(fake)
    assert (health, after_health["te_request_success"]) == (200, 2), (waited, after_health)
    assert waited >= 0.35, waited
    seen.append(after_health)
    scrape_until(fake, lambda m: m["te_request_success"] >= 3, seen=seen)
    for client in clients:
        client.join(timeout=5)
    assert results == [200, 200, 200]
    successes = [s.get("te_request_success", 0) for s in seen]
    assert sorted(set(successes)) == [0, 1, 2, 3] and successes == sorted(successes)  # one step per batch
    assert all(s.get("te_request_inference_duration_count", 0) == s.get("te_request_success", 0) for s in seen)
    assert any(s.get("te_queue_size") == 1 for s in seen if s.get("te_request_success", 0) == 0)
    final = scrape(fake)
    assert final["te_queue_size"] == 0 and final["te_batch_next_size_sum"] == 3
    assert final["te_batch_next_size_count"] >= 3 and final["te_request_count"] == 3
    assert final["te_request_inference_duration_sum"] >= 3 * 0.45


# hung ---------------------------------------------------------------------------------------------
def test_hung_backend_never_answers_but_metrics_do(tmp_path: Path, start: Callable[..., Fake]) -> None:
    """`hung`: inference and /health get no answer, /metrics answers at once with frozen counters; the
    first request sits in the backend, the second in the prefetch slot, only the third in te_queue_size.
    Removing the file lets everything finish."""
    flag = tmp_path / "health"
    fake = start(FAKE_TEI_HEALTH_FILE=str(flag))
    assert http("POST", fake.url("/embed"), {"inputs": "before"})[0] == 200
    flag.write_text("hung\n")
    results: list[int] = []
    clients = []
    # te_batch_next_size_sum counts the inputs taken off the queue (the first request's one included)
    for sent, (taken, queued) in enumerate(((2, 0), (3, 0), (3, 1)), start=1):
        clients.append(post_in_background(fake, "/embed", {"inputs": "stuck"}, results))
        # Counted on entry, queued a moment later (as in TEI): wait for both, then for the batcher.
        scrape_until(fake, has(te_request_count=1 + sent, te_batch_next_size_sum=taken, te_queue_size=queued))
    assert timed_health(fake, timeout=0.5)[0] is None
    frozen = scrape(fake)
    assert (frozen["te_request_success"], frozen["te_request_inference_duration_count"]) == (1, 1)
    assert frozen["te_queue_size"] == 1 and results == []
    flag.unlink()
    for client in clients:
        client.join(timeout=30)  # a bound, not a wait: they return as soon as the backend resumes
    assert results == [200, 200, 200]
    assert timed_health(fake, timeout=5)[0] == 200
    assert scrape(fake)["te_request_success"] == 4


def test_hung_backend_holds_the_graceful_drain_until_sigkill(tmp_path: Path, start: Callable[..., Fake]) -> None:
    """TEI drains in-flight requests with no time limit: SIGTERM under a hung request never finishes, SIGKILL does."""
    flag = tmp_path / "health"
    flag.write_text("hung")
    fake = start(FAKE_TEI_HEALTH_FILE=str(flag))
    results: list[int] = []
    client = post_in_background(fake, "/embed", {"inputs": "stuck"}, results)
    scrape_until(fake, has(te_request_count=1))
    fake.proc.send_signal(signal.SIGTERM)
    fake.wait_line("signal received, starting graceful shutdown")
    with pytest.raises(subprocess.TimeoutExpired):
        fake.proc.wait(timeout=0.3)
    fake.proc.kill()
    assert fake.proc.wait(timeout=5) == -signal.SIGKILL
    client.join(timeout=5)
    assert results == [-1]


# unhealthy ----------------------------------------------------------------------------------------
def test_unhealthy_backend_answers_503_and_424_until_the_file_goes(tmp_path: Path,
                                                                   start: Callable[..., Fake]) -> None:
    """`503`: /health 503 with TEI's body, inference 424 `Backend` (te_request_failure{err="inference"} per
    input), /metrics still answers; without the file the same process serves again."""
    flag = tmp_path / "health"
    fake = start(FAKE_TEI_HEALTH_FILE=str(flag), FAKE_TEI_BATCH_S="0.05")
    flag.write_text("503")
    assert http("GET", fake.url("/health"))[::2] == (503, UNHEALTHY_BODY)
    status, headers, body = http("POST", fake.url("/embed"), {"inputs": ["a", "b"]})
    assert (status, headers["content-type"], body) == (424, "application/json", EMBED_FAILURE_BODY)
    assert http("POST", fake.url("/v1/embeddings"), {"input": "a"})[::2] == (424, OPENAI_FAILURE_BODY)
    assert http("POST", fake.url("/tokenize"), {"inputs": "a"})[0] == 200  # tokenizer workers, not the backend
    failed = scrape(fake)
    assert (failed["te_request_failure"], failed.get("te_request_success", 0)) == (3, 0)
    assert 'te_request_failure{err="inference"} 3' in http("GET", fake.url("/metrics"))[2].decode()
    flag.unlink()
    assert http("GET", fake.url("/health"))[::2] == (200, b"")
    assert http("POST", fake.url("/embed"), {"inputs": "a"})[0] == 200
    assert scrape(fake)["te_request_success"] == 1
