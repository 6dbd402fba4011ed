"""The stand-in's backend under load and when it breaks: busy, hung and unhealthy, as TEI 1.9.3 behaves.

Real processes and sockets on 127.0.0.1; every wait is a poll with a deadline.
"""

from __future__ import annotations

import re
import signal
import socket
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
    """What the launcher's probe reads: each `name` summed over its label sets (the probe's own parse).

    /metrics never waits for the backend: the hung-backend test proves it (a hung backend would hold it forever)."""
    status, headers, body = http("GET", fake.url("/metrics"), timeout=30)
    assert status == 200 and headers["content-type"] == "text/plain; charset=utf-8"
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


def batch_sizes(fake: Fake) -> dict[str, int]:
    """How many batches fell in the `te_batch_next_size` bucket bands "2", "3-4" and "5-8" (the first bucket,
    le="1", also holds the batching task's idle polls, which record 0)."""
    text = http("GET", fake.url("/metrics"), timeout=30)[2].decode()
    bucket = {le: int(n) for le, n in re.findall(r'^te_batch_next_size_bucket\{le="([^"]+)"\} (\d+)$', text, re.M)}
    return {"2": bucket["2"] - bucket["1"], "3-4": bucket["4"] - bucket["2"], "5-8": bucket["8"] - bucket["4"]}


def hold_three(fake: Fake, flag: Path, results: list[int]) -> list[threading.Thread]:
    """With the backend hung (`flag` says so): one request runs, one waits prefetched, one is queued."""
    flag.write_text("hung")
    clients = []
    for sent, (taken, queued) in enumerate(((1, 0), (2, 0), (2, 1)), start=1):
        clients.append(post_in_background(fake, "/embed", {"inputs": f"text {sent}"}, results))
        scrape_until(fake, has(te_request_count=sent, te_batch_next_size_sum=taken, te_queue_size=queued), timeout=30)
    return clients


def get_in_background(fake: Fake, path: str, results: list[tuple[str, int]], name: str) -> threading.Thread:
    def call() -> None:
        results.append((name, http("GET", fake.url(path), timeout=60)[0]))
    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread


# busy ---------------------------------------------------------------------------------------------
def test_busy_backend_runs_one_batch_at_a_time_and_health_waits_behind_it(tmp_path: Path,
                                                                        start: Callable[..., Fake]) -> None:
    """FAKE_TEI_BATCH_S=1, three requests: one backend thread, FIFO; /metrics moves per completed batch;
    te_queue_size counts the one request behind the running and prefetched batches; /health waits for the
    batch in progress only, not for the prefetched or queued ones (it answers before either completes)."""
    flag = tmp_path / "health"
    fake = start(FAKE_TEI_BATCH_S="1", FAKE_TEI_HEALTH_FILE=str(flag))
    assert http("GET", fake.url("/metrics"))[2] == b""
    results: list[int] = []
    clients = hold_three(fake, flag, results)  # the order is built with the backend held: no race
    done: list[tuple[str, int]] = []
    health = get_in_background(fake, "/health", done, "health")

    def note_when_done(client: threading.Thread, name: str) -> None:
        client.join(60)
        done.append((name, 0))

    waiters = [threading.Thread(target=note_when_done, args=(c, f"request {i}"), daemon=True)
               for i, c in enumerate(clients[1:], start=2)]  # request 1 and health end together: not compared
    for waiter in waiters:
        waiter.start()
    seen = [scrape(fake)]
    flag.unlink()
    scrape_until(fake, lambda m: m.get("te_request_success", 0) >= 3, timeout=30, seen=seen)
    health.join(timeout=30)
    for waiter in waiters:
        waiter.join(timeout=30)
    assert results == [200, 200, 200]
    # health, asked while batch 1 was held, answers before batches 2 and 3 (1 s each, prefetched and queued) end
    assert [name for name, _ in done] == ["health", "request 2", "request 3"], done
    assert ("health", 200) in done
    successes = [s.get("te_request_success", 0) for s in seen]
    assert successes == sorted(successes) and seen[0].get("te_queue_size") == 1
    assert all(s.get("te_request_inference_duration_count", 0) == s.get("te_request_success", 0) for s in seen)
    final = scrape(fake)
    assert final["te_queue_size"] == 0 and final["te_batch_next_size_sum"] == 3
    assert batch_sizes(fake) == {"2": 0, "3-4": 0, "5-8": 0}  # three batches of one: none arrived together
    assert final["te_batch_next_size_count"] >= 3 and final["te_request_count"] == 3
    assert final["te_request_inference_duration_sum"] >= 2 * 1.0  # batches 2 and 3 slept their full second


def test_health_is_a_backend_command_never_a_queue_entry(tmp_path: Path, start: Callable[..., Fake]) -> None:
    """TEI's /health sends `BackendCommand::Health` to the backend thread (backends/src/lib.rs): it is never
    appended to the queue, so it never moves te_queue_size nor the batch histograms."""
    flag = tmp_path / "health"
    fake = start(FAKE_TEI_HEALTH_FILE=str(flag))
    results: list[int] = []
    clients = hold_three(fake, flag, results)
    done: list[tuple[str, int]] = []
    checks = [get_in_background(fake, "/health", done, f"health {i}") for i in range(3)]
    seen = [scrape(fake)]
    flag.unlink()
    for thread in checks + clients:
        thread.join(timeout=30)
    assert sorted(done) == [("health 0", 200), ("health 1", 200), ("health 2", 200)] and results == [200] * 3
    seen.append(scrape(fake))
    assert max(s["te_queue_size"] for s in seen) == 1, seen
    final = seen[-1]
    assert (final["te_queue_size"], final["te_batch_next_size_sum"], final["te_batch_next_tokens_sum"]) == (
        0, 3, 3 * 4)  # three inputs of 4 tokens ([CLS] text N [SEP]); no health among them


# batching -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("flags", "expected"), [
    ([], {"2": 0, "3-4": 1, "5-8": 0}),                             # the three queued inputs at once
    (["--max-batch-requests", "2"], {"2": 1, "3-4": 0, "5-8": 0}),  # two entries, then the third
    (["--max-batch-tokens", "8"], {"2": 1, "3-4": 0, "5-8": 0}),    # 4 tokens each: two fit in 8
])
def test_queued_requests_share_one_batch_within_the_limits(tmp_path: Path, flags: list[str],
                                                           expected: dict[str, int]) -> None:
    """TEI's queue (core/src/queue.rs) packs the queued entries, one per input, of all requests into the next
    batch up to --max-batch-tokens and --max-batch-requests; a request's inputs may be split across batches."""
    flag = tmp_path / "health"
    fake = Fake(["--model-id", str(write_model(tmp_path / "m")), *flags],
                base_env(tmp_path, FAKE_TEI_HEALTH_FILE=str(flag)))
    try:
        fake.ready()
        results: list[int] = []
        clients = hold_three(fake, flag, results)  # request 3 queued; a request of two inputs joins it
        clients += [post_in_background(fake, "/embed", {"inputs": ["text a", "text b"]}, results)]
        scrape_until(fake, has(te_request_count=4, te_queue_size=3), timeout=30)
        flag.unlink()
        for client in clients:
            client.join(timeout=30)
        scrape_until(fake, has(te_request_success=4, te_queue_size=0), timeout=30)
        assert sorted(results) == [200] * 4
        assert batch_sizes(fake) == expected
        assert scrape(fake)["te_batch_next_size_sum"] == 5
    finally:
        fake.stop()


# dropped ------------------------------------------------------------------------------------------
def test_queued_request_whose_client_left_is_dropped(tmp_path: Path, start: Callable[..., Fake]) -> None:
    """A client that hangs up while its request is queued: hyper drops the handler (no answer), and the queue
    skips its entries when it next takes a batch, counting te_request_failure{err="dropped"} per input."""
    flag = tmp_path / "health"
    fake = start(FAKE_TEI_HEALTH_FILE=str(flag))
    results: list[int] = []
    clients = hold_three(fake, flag, results)
    body = b'{"inputs":["gone a","gone b"]}'
    with socket.create_connection(("127.0.0.1", fake.port), timeout=30) as sock:
        sock.sendall(b"POST /embed HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"content-length: %d\r\n\r\n%s" % (len(body), body))
        scrape_until(fake, has(te_request_count=4, te_queue_size=3), timeout=30)
        sock.shutdown(socket.SHUT_WR)  # hyper treats the client's FIN as the connection gone (no half-close)
        assert sock.recv(1 << 16) == b"", "the dropped request must get no answer, only the close"
    values = scrape(fake)
    assert (values["te_queue_size"], values.get("te_request_failure", 0)) == (3, 0)  # counted when a batch is taken
    flag.unlink()
    for client in clients:
        client.join(timeout=30)
    final = scrape_until(fake, has(te_request_success=3, te_queue_size=0), timeout=30)
    assert results == [200] * 3
    assert 'te_request_failure{err="dropped"} 2' in http("GET", fake.url("/metrics"))[2].decode()
    assert final["te_batch_next_size_sum"] == 3  # the dropped inputs never reached the backend
    assert http("POST", fake.url("/embed"), {"inputs": "after"})[0] == 200


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
