"""The health probes against real sockets: /health has three answers (ok, failing, silent); /metrics gives progress."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from embed_launcher.supervision.liveness import Answer, Progress
from embed_launcher.supervision.probe import check_health, probe_health, read_progress


@pytest.fixture
def server() -> Iterator[Callable[[bytes | None], int]]:
    """A one-shot TCP server that answers every connection with fixed bytes (None: says nothing)."""
    sockets: list[socket.socket] = []
    released = threading.Event()  # a silent server stays silent until the test is over

    def start(reply: bytes | None) -> int:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        sockets.append(listener)

        def serve() -> None:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(1024)
                if reply is not None:
                    conn.sendall(reply)
                else:
                    released.wait(60)  # a hung server: the probe must give up on its own

        threading.Thread(target=serve, daemon=True).start()
        return int(listener.getsockname()[1])

    yield start
    released.set()
    for s in sockets:
        s.close()


@pytest.mark.parametrize(
    ("reply", "healthy"),
    [
        (b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", True),
        (b"HTTP/1.1 503 Service Unavailable\r\n\r\n{\"error\":\"unhealthy\"}", False),
        (b"HTTP/1.1 401 Unauthorized\r\n\r\n", False),
        (b"garbage 200\r\n", False),
        (b"", False),
    ],
)
def test_only_a_200_status_line_is_healthy(server: Callable[[bytes | None], int], reply: bytes, healthy: bool) -> None:
    """The status code decides; the body is never read."""
    port = server(reply)
    assert probe_health(f"http://127.0.0.1:{port}/health", 2.0) is healthy


def test_refused_connection_is_not_healthy() -> None:
    """Nothing listening (TEI still loading): False at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert probe_health(f"http://127.0.0.1:{port}/health", 2.0) is False


def test_a_silent_server_times_out_within_the_budget(server: Callable[[bytes | None], int]) -> None:
    """A TEI that accepts but never answers: False once the timeout runs out, not when the server gives up."""
    port = server(None)
    started = time.monotonic()
    assert probe_health(f"http://127.0.0.1:{port}/health", 0.3) is False
    # The server holds the connection for 60 s: an answer well before that came from the probe's own timeout.
    assert time.monotonic() - started < 30


@pytest.mark.parametrize(
    ("reply", "answer"),
    [
        (b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", Answer.OK),
        (b"HTTP/1.1 503 Service Unavailable\r\n\r\n", Answer.NOT_READY),
        (b"HTTP/1.1 500 Internal Server Error\r\n\r\n", Answer.NOT_READY),
        (b"garbage\r\n", Answer.FAILING),
        (b"", Answer.FAILING),  # closed without a word: TEI's handler panics that way when its backend is gone
        (None, Answer.SILENT),  # accepted, never answered: busy or hung, /metrics decides
    ],
)
def test_health_has_four_answers(server: Callable[[bytes | None], int], reply: bytes | None, answer: Answer) -> None:
    """Only silence is ambiguous; another status is NOT_READY (its own answer: the gateway is up), a hang-up or
    garbage is failing."""
    port = server(reply)
    assert check_health(f"http://127.0.0.1:{port}/health", 0.3) is answer


def test_refused_is_failing_not_silent() -> None:
    """Nothing listening on a ready child's port: the HTTP layer is gone."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert check_health(f"http://127.0.0.1:{port}/health", 1.0) is Answer.FAILING


METRICS = b"""HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n# TYPE te_queue_size gauge
te_queue_size 7
# TYPE te_request_success counter
te_request_success{method="embed"} 3
te_request_success{method="rerank"} 2
te_request_failure{err="inference"} 1
te_request_inference_duration_count{method="embed"} 5
te_request_inference_duration_sum{method="embed"} 12.5
te_request_inference_duration_bucket{method="embed",le="0.5"} 2
te_batch_next_size_count 4
te_batch_next_size_sum 40
te_request_count{method="embed"} 11
"""


def test_progress_reads_the_queue_and_sums_counters_over_labels(server: Callable[[bytes | None], int]) -> None:
    """Only the named lines count: _sum, _bucket, te_batch_next_size_* and other metrics are ignored; so is
    te_request_failure, which 429s (overloaded) and validation errors move without any work completing."""
    port = server(METRICS)
    assert read_progress(f"http://127.0.0.1:{port}/metrics", 1.0) == Progress(7.0, (5.0, 5.0))


@pytest.mark.parametrize("reply", [None, b"HTTP/1.1 503 Service Unavailable\r\n\r\n", b""])
def test_metrics_that_do_not_answer_200_give_no_progress(
    server: Callable[[bytes | None], int], reply: bytes | None
) -> None:
    """Silence, an error status or a hang-up: None, which the liveness judge counts as failing."""
    port = server(reply)
    assert read_progress(f"http://127.0.0.1:{port}/metrics", 0.3) is None
