"""The gateway's worst day: TEIs that die mid-answer or on a request, go silent, stall; clients that stall,
send too much, or have no key. Each test names the fault; the clients see one clean answer or a cut."""

from __future__ import annotations

import json
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import psutil
import pytest
from conftest import wait_until
from gateway_harness import (
    EMBED_KEY,
    RERANK_KEY,
    Gateway,
    RawTei,
    Stack,
    auth,
    drop,
    reply,
    start_gateway,
    start_stack,
    stop_stack,
)

pytestmark = pytest.mark.integration
VECTOR = b"[[0.25,0.5]]"


@pytest.fixture
def raw_teis() -> Iterator[Callable[..., RawTei]]:
    made: list[RawTei] = []

    def make(answer: Callable[[BaseHTTPRequestHandler, bytes], None], **kwargs: object) -> RawTei:
        made.append(RawTei(answer, **kwargs))  # type: ignore[arg-type]
        return made[-1]

    yield make
    for raw in made:
        raw.close()


@pytest.fixture
def gateways(tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    started: list[Gateway] = []

    def start(models: list[dict[str, object]], **kwargs: object) -> Gateway:
        started.append(start_gateway(tmp_path, models, keys=None, **kwargs))  # type: ignore[arg-type]
        return started[-1]

    yield start
    for gateway in started:
        if gateway.proc.poll() is None:
            gateway.proc.kill()
        gateway.proc.wait(timeout=10)


def raw_post(port: int, path: str, body: bytes, timeout_s: float = 15) -> bytes:
    """Everything the gateway sends back on one connection until it closes it (or the timeout)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(timeout_s)
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        got = b""
        try:
            while chunk := sock.recv(1 << 16):
                got += chunk
        except ConnectionResetError:
            pass
        return got


# item 1: a TEI that dies mid-answer ----------------------------------------------------------------
def test_a_tei_that_dies_mid_answer_cuts_the_clients_connection(raw_teis: Callable[..., RawTei],
                                                                  gateways: Callable[..., Gateway]) -> None:
    """Headers and half of a 1 MB body, then TEI's connection drops: the client gets one status line, a
    truncated body and a closed connection; never a second response inside the first one's body."""

    def half_then_die(handler: BaseHTTPRequestHandler, _body: bytes) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", "1000000")
        handler.end_headers()
        handler.wfile.write(b"[" + b"0.5," * 100_000)
        drop(handler)

    raw = raw_teis(half_then_die)
    gateway = gateways([raw.entry()])
    got = raw_post(gateway.ports[0], "/embed", b'{"inputs":"a"}')  # returns once the gateway closes
    assert got.count(b"HTTP/1.1 ") == 1 and got.startswith(b"HTTP/1.1 200")
    assert len(got.split(b"\r\n\r\n", 1)[1]) < 1_000_000
    assert "the answer was cut after" in gateway.output()


# item 4: a request that crashes TEI is not replayed; one disconnect marks nothing down -----------------
def test_a_request_that_crashes_tei_gets_502_and_is_sent_once(raw_teis: Callable[..., RawTei],
                                                               gateways: Callable[..., Gateway]) -> None:
    def crash_on_poison(handler: BaseHTTPRequestHandler, body: bytes) -> None:
        if b"poison" in body:
            drop(handler)
        else:
            reply(handler, 200, VECTOR)

    raw = raw_teis(crash_on_poison)
    gateway = gateways([raw.entry()])
    native = httpx.post(gateway.url("/embed"), json={"inputs": "poison"}, timeout=20)
    assert native.status_code == 502 and native.json()["error_type"] == "Backend"
    openai = httpx.post(gateway.url("/v1/embeddings"), json={"input": "poison"}, timeout=20)
    assert openai.status_code == 502 and openai.json()["error"]["code"] == "upstream_failed"
    assert [b for _, _, b in raw.received].count(b'{"inputs":"poison"}') == 1
    probes = raw.probes
    assert httpx.post(gateway.url("/embed"), json={"inputs": "fine"}, timeout=20).content == VECTOR
    assert raw.probes == probes  # the disconnects marked nothing down: no readiness poll was started


def replicated(raws: list[RawTei]) -> dict[str, object]:
    entry = raws[0].entry()
    entry["replicas"] = [r.url for r in raws]
    return entry


def test_a_replica_dying_under_a_request_hands_it_to_one_sibling(raw_teis: Callable[..., RawTei],
                                                                 gateways: Callable[..., Gateway]) -> None:
    """With replicas, a request inside one that died goes once to a ready sibling: the client gets its
    answer (a replica killed under load costs no request)."""
    dead = raw_teis(lambda handler, _body: drop(handler))
    alive = raw_teis(lambda handler, _body: reply(handler, 200, VECTOR))
    gateway = gateways([replicated([dead, alive])], balance="round-robin")
    for _ in range(4):  # round-robin: some of these go to the dying replica first
        assert httpx.post(gateway.url("/embed"), json={"inputs": "x"}, timeout=20).content == VECTOR
    assert dead.received, "the dying replica was never tried: the test proves nothing"
    assert len(alive.received) == 4


def test_a_poison_request_reaches_at_most_two_replicas(raw_teis: Callable[..., RawTei],
                                                       gateways: Callable[..., Gateway]) -> None:
    """A request that kills every TEI it meets is sent to one sibling at most, then answered 502: it
    cannot take down a third replica (or the replacements)."""

    def crash_on_poison(handler: BaseHTTPRequestHandler, body: bytes) -> None:
        if b"poison" in body:
            drop(handler)
        else:
            reply(handler, 200, VECTOR)

    raws = [raw_teis(crash_on_poison) for _ in range(3)]
    gateway = gateways([replicated(raws)])
    answer = httpx.post(gateway.url("/v1/embeddings"), json={"input": "poison"}, timeout=20)
    assert answer.status_code == 502 and answer.json()["error"]["code"] == "upstream_failed"
    assert sum(1 for r in raws for _, _, b in r.received if b"poison" in b) == 2
    assert httpx.post(gateway.url("/embed"), json={"inputs": "fine"}, timeout=20).content == VECTOR


def test_the_idle_close_race_is_sent_again_without_marking_the_model_down(
        raw_teis: Callable[..., RawTei], gateways: Callable[..., Gateway]) -> None:
    """TEI closes a kept-alive connection just as the next request goes out on it: that request was
    never processed, so it is sent again on a new connection, and the model is not marked down."""

    def one_per_connection(handler: BaseHTTPRequestHandler, _body: bytes) -> None:
        if getattr(handler, "served", False):
            drop(handler)  # as if it had closed the idle connection a moment earlier
            return
        handler.served = True  # type: ignore[attr-defined]
        reply(handler, 200, VECTOR)

    raw = raw_teis(one_per_connection)
    gateway = gateways([raw.entry()])
    with httpx.Client(timeout=20) as http:
        for _ in range(3):
            assert http.post(gateway.url("/embed"), json={"inputs": "a"}).content == VECTOR
    probes = raw.probes
    assert httpx.post(gateway.url("/embed"), json={"inputs": "a"}, timeout=20).content == VECTOR
    assert raw.probes == probes


# item 12: a silent /health never makes a model ready ----------------------------------------------------
def test_a_silent_health_does_not_make_a_model_ready(raw_teis: Callable[..., RawTei],
                                                     gateways: Callable[..., Gateway]) -> None:
    def silent(handler: BaseHTTPRequestHandler) -> None:
        raw.stopping.wait(60)  # accepts the connection, never answers

    raw = raw_teis(lambda handler, _body: reply(handler, 200, VECTOR), health=silent)
    gateway = gateways([raw.entry()], wait_s=0.5)
    wait_until(lambda: raw.probes >= 2, 20)  # the first probe timed out, and the poll went on
    health = httpx.get(gateway.url("/health"))
    assert health.status_code == 503 and "raw" not in health.text
    assert httpx.post(gateway.url("/embed"), json={"inputs": "a"}, timeout=20).status_code == 503


# item 6: upstream deadline -------------------------------------------------------------------------------
def test_a_tei_that_never_answers_gets_504_at_the_upstream_timeout(raw_teis: Callable[..., RawTei],
                                                                   gateways: Callable[..., Gateway]) -> None:
    raw: RawTei
    raw = raw_teis(lambda handler, _body: raw.stopping.wait(60))
    gateway = gateways([raw.entry()], upstream_timeout_s=1.0)
    r = httpx.post(gateway.url("/v1/embeddings"), json={"input": "a"}, timeout=30)
    assert r.status_code == 504 and "EMBED_GATEWAY_UPSTREAM_TIMEOUT" in r.json()["error"]["message"]


# item 10: the drain fits the stop timeout ------------------------------------------------------------------
def test_sigterm_with_a_stuck_request_exits_within_the_configured_drain(raw_teis: Callable[..., RawTei],
                                                                       gateways: Callable[..., Gateway]) -> None:
    raw: RawTei
    raw = raw_teis(lambda handler, _body: raw.stopping.wait(60))
    gateway = gateways([raw.entry()], drain_s=0.5)
    stuck = threading.Thread(target=lambda: raw_post(gateway.ports[0], "/embed", b'{"inputs":"a"}', 30),
                             daemon=True)
    stuck.start()
    wait_until(lambda: raw.received, 10)
    gateway.proc.send_signal(signal.SIGTERM)
    assert gateway.proc.wait(timeout=3) == 0  # 3 s: the tests' EMBED_STOP_TIMEOUT; the old fixed drain was 5 s


# item 9: bodies for TEI are never larger than the client's ----------------------------------------------------
def test_a_renamed_openai_request_keeps_its_utf8_size(raw_teis: Callable[..., RawTei],
                                                      gateways: Callable[..., Gateway]) -> None:
    raw = raw_teis(lambda handler, _body: reply(handler, 200, b'{"object":"list","data":[],"model":"raw",'
                                                               b'"usage":{"prompt_tokens":1,"total_tokens":1}}'))
    gateway = gateways([{**raw.entry(), "aliases": ["r"]}])
    sent = json.dumps({"input": ["東京タワー" * 50, "🙂" * 50], "model": "r"}, ensure_ascii=False).encode()
    r = httpx.post(gateway.url("/v1/embeddings"), content=sent, headers={"Content-Type": "application/json"})
    assert r.status_code == 200 and r.json()["model"] == "r"
    (_, _, received), = raw.received
    assert len(received) <= len(sent) and json.loads(received)["model"] == "raw"


# item 8: errors in the route's shape ----------------------------------------------------------------------
def test_teis_plain_text_errors_become_openai_json_on_openai_routes(raw_teis: Callable[..., RawTei],
                                                                   gateways: Callable[..., Gateway]) -> None:
    message = b"Failed to deserialize the JSON body into the target type: input: invalid type: integer `42`"
    raw = raw_teis(lambda handler, _body: reply(handler, 422, message, "text/plain; charset=utf-8"))
    gateway = gateways([raw.entry()])
    r = httpx.post(gateway.url("/v1/embeddings"), json={"input": 42})
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/json")
    assert r.json()["error"]["message"] == message.decode() and r.json()["error"]["code"] == 422
    native = httpx.post(gateway.url("/embed"), json={"inputs": 42})
    assert (native.status_code, native.content) == (422, message)  # the native route keeps TEI's answer


def test_a_non_json_content_type_is_415_and_405_names_the_methods(raw_teis: Callable[..., RawTei],
                                                                 gateways: Callable[..., Gateway]) -> None:
    raw = raw_teis(lambda handler, _body: reply(handler, 200, VECTOR))
    gateway = gateways([raw.entry()])
    r = httpx.post(gateway.url("/v1/embeddings"), content=b'{"input":"a"}', headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and "Content-Type: application/json" in r.json()["error"]["message"]
    assert httpx.post(gateway.url("/embed"), content=b'{"inputs":"a"}').status_code == 415
    assert not raw.received
    wrong = httpx.get(gateway.url("/embed"))
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert httpx.post(gateway.url("/info")).headers["allow"] == "GET, HEAD"


# item 12: deep JSON, a malformed x-compute-tokens ------------------------------------------------------------
def test_deeply_nested_json_is_400_and_a_bad_compute_tokens_header_is_ignored(
        raw_teis: Callable[..., RawTei], gateways: Callable[..., Gateway]) -> None:
    raw = raw_teis(lambda handler, _body: reply(handler, 200, b'[{"index":0,"score":0.9}]',
                                                headers={"x-compute-tokens": "lots"}))
    gateway = gateways([raw.entry(kind="rerank")])
    deep = b'{"query":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    r = httpx.post(gateway.url("/v1/rerank"), content=deep, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "nested too deeply" in r.json()["error"]["message"]
    ranked = httpx.post(gateway.url("/v1/rerank"), json={"query": "q", "documents": ["a"]})
    assert ranked.status_code == 200 and ranked.json()["usage"]["total_tokens"] == 0


# item 7: callers without a key learn nothing -------------------------------------------------------------------
@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(tmp_path_factory.mktemp("stack"), batch=4, permits="16", max_inputs=50)
    yield running
    stop_stack(running)


@pytest.mark.parametrize("path", ["/models/secret-model/embed", "/models/BAAI/bge-m3/embed", "/nowhere"])
def test_without_a_key_no_model_is_named(stack: Stack, path: str) -> None:
    denied = httpx.post(stack.gateway.url(path), json={"inputs": "a"})
    assert (denied.status_code, denied.content) == (401, b"")
    health = httpx.get(stack.gateway.url("/health"))
    assert "bge" not in health.text and "BAAI" not in health.text


def test_with_a_key_an_unknown_model_is_404(stack: Stack) -> None:
    r = httpx.post(stack.gateway.url("/models/secret-model/embed"), json={"inputs": "a"}, headers=auth())
    assert r.status_code == 404


# item 5: big batches are answered, in bounded flights; too many inputs is a 422 -------------------------
def test_a_large_batch_is_answered_on_an_idle_server(stack: Stack) -> None:
    """Limit 4, 16 permits (TEI counts one per input), 40 inputs = 10 chunks: all at once would take 40
    permits and get TEI's 429; four at a time fit."""
    stack.small.kill()
    stack.small.start(request_delay_s=0.3).wait_ready()
    texts = [f"text {i}" for i in range(40)]
    r = httpx.post(stack.gateway.url("/embed"), json={"inputs": texts}, headers=auth(), timeout=30)
    assert r.status_code == 200 and len(r.json()) == 40
    o = httpx.post(stack.gateway.url("/v1/embeddings"), json={"input": texts}, headers=auth(), timeout=30)
    assert o.status_code == 200 and [d["index"] for d in o.json()["data"]] == list(range(40))


@pytest.mark.parametrize(("path", "body", "key"), [("/embed", {"inputs": ["a"] * 51}, EMBED_KEY),
                                                   ("/v1/embeddings", {"input": ["a"] * 51}, EMBED_KEY),
                                                   ("/v1/rerank", {"query": "q", "documents": ["a"] * 51},
                                                    RERANK_KEY)])
def test_more_inputs_than_the_cap_is_422_naming_the_variable(stack: Stack, path: str, body: object,
                                                            key: str) -> None:
    r = httpx.post(stack.gateway.url(path), json=body, headers=auth(key))
    assert r.status_code == 422
    assert "EMBED_GATEWAY_MAX_INPUTS" in r.text and "50" in r.text


# item 6: slow and idle clients ---------------------------------------------------------------------------
def open_fds(pid: int) -> int:
    return psutil.Process(pid).num_fds()


def test_a_thousand_stalled_clients_are_closed_and_others_are_served(raw_teis: Callable[..., RawTei],
                                                                   gateways: Callable[..., Gateway]) -> None:
    raw = raw_teis(lambda handler, _body: reply(handler, 200, VECTOR))
    gateway = gateways([raw.entry()], read_timeout_s=1.0)
    assert httpx.post(gateway.url("/embed"), json={"inputs": "a"}).content == VECTOR
    baseline = open_fds(gateway.proc.pid)
    stalled = []
    try:
        for _ in range(1000):
            sock = socket.create_connection(("127.0.0.1", gateway.ports[0]))
            sock.sendall(b"POST /emb")  # half a request line, then nothing
            stalled.append(sock)
        assert httpx.post(gateway.url("/embed"), json={"inputs": "b"}, timeout=20).content == VECTOR
        wait_until(lambda: open_fds(gateway.proc.pid) <= baseline, 30, 0.2)
        for sock in stalled[:10]:
            sock.settimeout(5)
            assert sock.recv(10) == b""  # closed by the gateway
    finally:
        for sock in stalled:
            sock.close()


def test_a_stalled_body_and_an_idle_connection_are_closed(raw_teis: Callable[..., RawTei],
                                                          gateways: Callable[..., Gateway]) -> None:
    """Headers in time but the body never completes: closed at the read timeout. A connection that
    sends nothing at all: closed at the idle timeout. Neither reaches TEI."""
    raw = raw_teis(lambda handler, _body: reply(handler, 200, VECTOR))
    gateway = gateways([raw.entry()], read_timeout_s=1.0, idle_timeout_s=1.0)
    with socket.create_connection(("127.0.0.1", gateway.ports[0])) as slow, \
            socket.create_connection(("127.0.0.1", gateway.ports[0])) as idle:
        slow.sendall(b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"inp")
        for sock in (slow, idle):
            sock.settimeout(20)
            assert sock.recv(1000) == b""
    assert not raw.received


def test_an_answer_the_client_does_not_read_is_dropped(raw_teis: Callable[..., RawTei],
                                                       gateways: Callable[..., Gateway]) -> None:
    """A 40 MB answer to a client that never reads: the gateway gives up at the write timeout and
    closes the connection (its buffers and TEI's connection freed), and serves others meanwhile."""
    big = b"[" + b"0.5," * 10_000_000 + b"0.5]"
    raw = raw_teis(lambda handler, _body: reply(handler, 200, big))
    gateway = gateways([raw.entry()], write_timeout_s=1.0)
    baseline = open_fds(gateway.proc.pid)
    with socket.create_connection(("127.0.0.1", gateway.ports[0])) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        body = b'{"inputs":"a"}'
        sock.sendall(b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\n\r\n" + body)
        wait_until(lambda: raw.received, 10)
        assert httpx.get(gateway.url("/health")).status_code == 200
        wait_until(lambda: "the answer was cut after" in gateway.output(), 30)
        wait_until(lambda: open_fds(gateway.proc.pid) <= baseline + 1, 30, 0.2)  # + the pooled TEI connection


def test_when_one_chunk_fails_the_others_are_cancelled(raw_teis: Callable[..., RawTei],
                                                       gateways: Callable[..., Gateway]) -> None:
    """Limit 1, three inputs: the chunk TEI rejects is answered at once; the two TEI is still working
    on are cancelled (their connections closed), not awaited for answers that would be thrown away."""

    def reject_bad_hold_others(handler: BaseHTTPRequestHandler, body: bytes) -> None:
        if b"bad" in body:
            reply(handler, 422, b'{"error":"bad input","error_type":"Validation"}')
        else:
            raw.stopping.wait(60)

    raw = raw_teis(reject_bad_hold_others)
    gateway = gateways([raw.entry(batch=1)])
    r = httpx.post(gateway.url("/embed"), json={"inputs": ["slow", "bad", "slow too"]}, timeout=30)
    assert r.status_code == 422 and r.json()["error"] == "bad input"
    wait_until(lambda: len(raw.received) == 3, 10)
    # only the keep-alive connection that carried the 422 is left; the two held ones were closed
    wait_until(lambda: upstream_connections(gateway.proc.pid, raw.port) <= 1, 10)


def upstream_connections(pid: int, port: int) -> int:
    return sum(1 for c in psutil.Process(pid).net_connections("tcp")
               if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED)
