"""Request ids and structured logs (issue 20): the id's rules, its echo and its trip to TEI, and the JSON lines.

The gateway tests run the real gateway in front of TEI stand-ins that record the id headers they receive
(FAKE_TEI_REQUEST_ID_LOG, a test-only knob); the last test runs the whole launcher with EMBED_LOG_FORMAT=json.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import LauncherRun, make_tei, wait_until
from gateway_harness import (
    RERANK_KEY,
    RawTei,
    Stack,
    auth,
    drop,
    start_gateway,
    start_stack,
    stop_stack,
)

from embed_launcher.gateway import logs
from embed_launcher.gateway.keyfile import KeyEntry, hash_key, render_entry
from embed_launcher.gateway.requestid import MAX_ID_CHARS, choose, sane_id, trace_id

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"
GENERATED = re.compile(r"[0-9a-f]{32}")


# The id's rules (pure) -------------------------------------------------------------------------

@pytest.mark.parametrize(("sent", "kept"), [
    ("abc-123", True), ("x" * MAX_ID_CHARS, True), ("req:42/a_b.c~!", True),
    ("", False), ("x" * (MAX_ID_CHARS + 1), False), ("has space", False), ("tab\there", False),
    ("caf\u00e9", False), ("line\nbreak", False),
])
def test_a_client_id_is_kept_only_when_sane(sent: str, kept: bool) -> None:
    """Printable ASCII without spaces, at most 128 characters; anything else is ignored."""
    assert (sane_id(sent) == sent) is kept


@pytest.mark.parametrize(("traceparent", "expected"), [
    (TRACEPARENT, TRACE),
    (f"01-{TRACE}-00f067aa0ba902b7-01-later-fields", TRACE),  # a later version may add fields
    (f"00-{TRACE}-00f067aa0ba902b7-01-extra", None),  # version 00 has exactly four
    (f"ff-{TRACE}-00f067aa0ba902b7-01", None),
    (f"00-{'0' * 32}-00f067aa0ba902b7-01", None),
    (f"00-{TRACE}-{'0' * 16}-01", None),
    (f"00-{TRACE.upper()}-00f067aa0ba902b7-01", None),
    ("garbage", None),
])
def test_the_trace_id_of_a_valid_traceparent(traceparent: str, expected: str | None) -> None:
    assert trace_id(traceparent) == expected


def test_the_id_prefers_the_client_id_then_the_trace_id_then_a_new_one() -> None:
    assert choose("mine", TRACEPARENT, new=lambda: "new") == "mine"
    assert choose("not sane", TRACEPARENT, new=lambda: "new") == TRACE
    assert choose(None, "bad", new=lambda: "new") == "new"
    assert GENERATED.fullmatch(choose(None, None))


def test_access_lines_in_both_formats() -> None:
    """Text keeps its words and gains rid= (before key=, which stays last); JSON carries the pinned keys
    and leaves out what is unknown."""
    log = logs.RequestLog("rid-1", model="small", replicas=[0, 1], inputs=7)
    try:
        logs.configure("text")
        text = logs.access_line("127.0.0.1", "POST", "/v1/embeddings", "1.1", 200, 10, 0.0125, "ci", log)
        assert text == '127.0.0.1 "POST /v1/embeddings HTTP/1.1" 200 10 0.012500s rid=rid-1 key=ci'
        logs.configure("json")
        record = json.loads(logs.access_line("127.0.0.1", "POST", "/v1/embeddings", "1.1", 200, 10, 0.0125,
                                             None, log))
        assert {k: record[k] for k in ("level", "logger", "request_id", "status", "duration_ms", "inputs",
                                       "model", "replica")} == {
            "level": "info", "logger": "gateway.access", "request_id": "rid-1", "status": 200,
            "duration_ms": 12.5, "inputs": 7, "model": "small", "replica": [0, 1]}
        assert "key" not in record
    finally:
        logs.configure("text")


# The gateway in front of TEI stand-ins that record the ids -------------------------------------

def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def start_recorded_stack(tmp: Path, batch: int = 512, **gateway: Any) -> tuple[Stack, Path]:
    """A stack whose stand-ins record the id headers they receive (in the returned file)."""
    recorded = tmp / "request-ids.jsonl"
    return start_stack(tmp, batch, knobs={"FAKE_TEI_REQUEST_ID_LOG": str(recorded)}, **gateway), recorded


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Path]]:
    """A stack whose model batch is 4 (a larger request is cut into chunks), access log on, text format."""
    stack, path = start_recorded_stack(tmp_path_factory.mktemp("rid"), batch=4, access_log=True,
                                       max_body_bytes=65536)
    yield stack, path
    stop_stack(stack)


def sent_to_tei(path: Path, rid: str) -> list[dict[str, Any]]:
    return [r for r in records(path) if r["x-request-id"] == rid]


def one_sent(path: Path, rid: str) -> dict[str, Any]:
    """The one request TEI received with this id (waiting for its record)."""
    wait_until(lambda: sent_to_tei(path, rid))
    (seen,) = sent_to_tei(path, rid)
    return seen


@pytest.mark.integration
def test_a_sent_id_is_echoed_and_reaches_tei(recorded: tuple[Stack, Path]) -> None:
    stack, path = recorded
    response = httpx.post(stack.gateway.url("/v1/embeddings"), json={"input": "hi"},
                          headers={**auth(), "X-Request-Id": "client-id-1"})
    assert response.status_code == 200
    assert response.headers["X-Request-Id"] == "client-id-1"
    seen = one_sent(path, "client-id-1")
    assert (seen["path"], seen["traceparent"]) == ("/v1/embeddings", None)
    stack.gateway.wait_for('"POST /v1/embeddings HTTP/1.1" 200')
    assert re.search(r'"POST /v1/embeddings HTTP/1\.1" 200 \d+ [\d.]+s rid=client-id-1 key=default\n',
                     stack.gateway.output())


@pytest.mark.integration
def test_an_id_is_generated_when_none_is_sent(recorded: tuple[Stack, Path]) -> None:
    stack, path = recorded
    ids = []
    for sent in (None, "not sane: has spaces", "x" * (MAX_ID_CHARS + 1)):
        headers = auth() if sent is None else {**auth(), "X-Request-Id": sent}
        response = httpx.post(stack.gateway.url("/embed"), json={"inputs": "hi"}, headers=headers)
        assert response.status_code == 200
        rid = response.headers["X-Request-Id"]
        assert GENERATED.fullmatch(rid)
        wait_until(lambda rid=rid: sent_to_tei(path, rid))  # type: ignore[misc]
        ids.append(rid)
    assert len(set(ids)) == 3


@pytest.mark.integration
def test_a_traceparent_gives_its_trace_id_and_is_passed_on_unchanged(recorded: tuple[Stack, Path]) -> None:
    stack, path = recorded
    response = httpx.post(stack.gateway.url("/rerank"), json={"query": "q", "texts": ["a", "b"]},
                          headers={**auth(RERANK_KEY), "traceparent": TRACEPARENT})
    assert response.status_code == 200 and response.headers["X-Request-Id"] == TRACE
    seen = one_sent(path, TRACE)
    assert seen["traceparent"] == TRACEPARENT
    both = httpx.post(stack.gateway.url("/embed"), json={"inputs": "x"},
                      headers={**auth(), "traceparent": TRACEPARENT, "X-Request-Id": "wins"})
    assert both.headers["X-Request-Id"] == "wins"
    seen = one_sent(path, "wins")
    assert seen["traceparent"] == TRACEPARENT


@pytest.mark.integration
def test_every_chunk_of_a_split_batch_carries_the_same_id(recorded: tuple[Stack, Path]) -> None:
    """10 inputs, a batch of 4: three requests to TEI, each with the client's id (OpenAI and Ollama routes)."""
    stack, path = recorded
    texts = [f"text {i}" for i in range(10)]
    response = httpx.post(stack.gateway.url("/v1/embeddings"), json={"input": texts},
                          headers={**auth(), "X-Request-Id": "split-1"})
    assert response.status_code == 200 and len(response.json()["data"]) == 10
    assert response.headers["X-Request-Id"] == "split-1"
    wait_until(lambda: len(sent_to_tei(path, "split-1")) == 3)
    ollama = httpx.post(stack.gateway.url("/api/embed"), json={"model": "small", "input": texts},
                        headers={**auth(), "X-Request-Id": "split-2"})
    assert ollama.status_code == 200 and ollama.headers["X-Request-Id"] == "split-2"
    wait_until(lambda: len(sent_to_tei(path, "split-2")) == 3)
    cohere = httpx.post(stack.gateway.url("/v1/rerank"), json={"query": "q", "documents": texts},
                        headers={**auth(RERANK_KEY), "X-Request-Id": "split-3"})
    assert cohere.status_code == 200 and cohere.headers["X-Request-Id"] == "split-3"
    wait_until(lambda: len(sent_to_tei(path, "split-3")) == 3)


@pytest.mark.integration
@pytest.mark.parametrize(("method", "path", "body", "headers", "status"), [
    ("POST", "/v1/embeddings", {"input": "x"}, {}, 401),
    ("GET", "/no/such/route", None, auth(), 404),
    ("POST", "/v1/embeddings", {"input": "x" * 70000}, auth(), 413),
    ("POST", "/v1/embeddings", {"input": "x", "model": "nope"}, auth(), 404),
    ("GET", "/metrics", None, auth(), 200),
    ("GET", "/health", None, {}, 200),
    ("GET", "/api/tags", None, auth(), 200),
    ("GET", "/openapi.json", None, {}, 200),
])
def test_every_answer_carries_the_id(recorded: tuple[Stack, Path], method: str, path: str, body: object,
                                     headers: dict[str, str], status: int) -> None:
    stack, _ = recorded
    response = httpx.request(method, stack.gateway.url(path), json=body, headers={**headers, "X-Request-Id": "every"})
    assert response.status_code == status
    assert response.headers["X-Request-Id"] == "every"


def cut_half_way(handler: BaseHTTPRequestHandler, body: bytes) -> None:
    """An answer larger than the gateway buffers (it streams it), cut half-way: the gateway logs an Error line."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(1 << 20))
    handler.end_headers()
    handler.wfile.write(b"[" + b"0," * (1 << 18))
    handler.wfile.flush()
    drop(handler)


@pytest.mark.integration
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_error_lines_about_a_request_name_its_id(tmp_path: Path, log_format: str) -> None:
    """A 502 (TEI dropped the request) and a cut stream: the id is echoed, and the error and access lines
    name it; in JSON every line of the gateway parses and every line about the request carries its id."""
    dropper, cutter = RawTei(lambda handler, body: drop(handler)), RawTei(cut_half_way)
    models = [dropper.entry("dropper"), {**cutter.entry("cutter"), "default": False}]
    gateway = start_gateway(tmp_path, models, keys=None, access_log=True, log_format=log_format)
    try:
        gateway.wait_healthy()
        failed = httpx.post(gateway.url("/embed"), json={"inputs": "x"}, headers={"X-Request-Id": "drop-1"})
        assert failed.status_code == 502 and failed.headers["X-Request-Id"] == "drop-1"
        with pytest.raises(httpx.HTTPError):
            httpx.post(gateway.url("/v1/embeddings"), json={"input": "x", "model": "cutter"},
                       headers={"X-Request-Id": "cut-1"}).read()
        gateway.wait_for("the answer was cut")
        wait_until(lambda: gateway.output().count("cut-1") >= 2)  # the error line and the access line
        wait_until(lambda: gateway.output().count("drop-1") >= 2)
    finally:
        gateway.stop()
        dropper.close()
        cutter.close()
    lines = gateway.output().splitlines()
    if log_format == "text":
        assert any(line.startswith("Error: POST /v1/embeddings: the answer was cut") and line.endswith(" rid=cut-1")
                   for line in lines)
        assert any('"POST /embed HTTP/1.1" 502' in line and " rid=drop-1 key=-" in line for line in lines)
        assert any(line.startswith("Error: POST /embed: model `dropper`: the server closed the connection")
                   and line.endswith(" rid=drop-1") for line in lines)
        return
    parsed = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"ts", "level", "logger", "msg"} <= set(r) for r in parsed)
    for rid in ("drop-1", "cut-1"):
        about = [r for r in parsed if rid in json.dumps(r)]
        assert about and all(r["request_id"] == rid for r in about)
    (cut,) = [r for r in parsed if r["msg"].startswith("Error: POST /v1/embeddings: the answer was cut")]
    assert (cut["level"], cut["logger"], cut["model"]) == ("error", "gateway", "cutter")
    (dropped,) = [r for r in parsed if r["msg"].startswith("Error: POST /embed: model `dropper`")]
    assert (dropped["level"], dropped["request_id"], dropped["model"]) == ("error", "drop-1", "dropper")
    (access,) = [r for r in parsed if r["logger"] == "gateway.access" and r["request_id"] == "drop-1"]
    assert (access["status"], access["model"], access["inputs"], access["replica"]) == (502, "dropper", 1, 0)
    assert isinstance(access["duration_ms"], float)


# The whole launcher in JSON ------------------------------------------------------------------------

@pytest.mark.integration
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_line_about_a_key_over_its_rate_limit_names_the_request(tmp_path: Path, log_format: str) -> None:
    """A key over its rpm: the 429 echoes the request's id, and the gateway's line about the key (logged once
    per 10 s) names it, as every line about a request does."""
    keys = tmp_path / "keys.toml"
    keys.write_text(render_entry(KeyEntry("limited", hash_key("k-limited-1"), rpm=1)))
    stack = start_stack(tmp_path, env={"EMBED_API_KEYS_FILE": str(keys)}, log_format=log_format)
    try:
        answers = [httpx.post(stack.gateway.url("/v1/embeddings"), json={"input": "x"},
                              headers={**auth("k-limited-1"), "X-Request-Id": f"limited-{i}"}) for i in range(2)]
        assert [a.status_code for a in answers] == [200, 429]  # rpm 1: the bucket holds one request
        assert answers[1].headers["X-Request-Id"] == "limited-1"
        stack.gateway.wait_for("over its rate limit")
    finally:
        stop_stack(stack)
    (line,) = [line for line in stack.gateway.output().splitlines() if "over its rate limit" in line]
    message = "Key limited: over its rate limit (429; logged once per 10 s)"
    if log_format == "text":
        assert line == f"{message} rid=limited-1"
    else:
        assert {k: json.loads(line)[k] for k in ("logger", "msg", "request_id")} == {
            "logger": "gateway", "msg": message, "request_id": "limited-1"}


@pytest.mark.integration
def test_the_launcher_in_json_every_line_parses_and_tei_gets_the_id(launch: Any, tei_dir: Path,
                                                                      tmp_path: Path) -> None:
    """EMBED_LOG_FORMAT=json: the launcher's, the gateway's and TEI's (--json-output) lines are JSON objects;
    TEI's Ready is still recognised; a request's id reaches TEI and its access line."""
    recorded = tmp_path / "ids.jsonl"
    tei = make_tei(tei_dir, load_s=0.1, request_id_log=recorded)
    run: LauncherRun = launch({"EMBED_LOG_FORMAT": "json", "EMBED_GATEWAY_ACCESS_LOG": "true",
                               "EMBED_API_KEY": ""}, tei=tei)
    run.wait_for("Text embeddings server is ready")
    port = run.ports["EMBED_PORT"]
    response = httpx.post(f"http://127.0.0.1:{port}/v1/embeddings", json={"input": ["a", "b"]},
                          headers={"X-Request-Id": "launcher-json-1"})
    assert response.status_code == 200 and response.headers["X-Request-Id"] == "launcher-json-1"
    wait_until(lambda: sent_to_tei(recorded, "launcher-json-1"))
    run.wait_for('"request_id":"launcher-json-1"')
    parsed = [json.loads(line) for line in run.output().splitlines() if line.strip()]
    assert any(r.get("message") == "Ready" and "target" in r for r in parsed)  # TEI's own, relayed as it is
    assert any(r.get("logger") == "embed-launcher" and "is ready" in r["msg"] for r in parsed)
    (access,) = [r for r in parsed if r.get("logger") == "gateway.access" and "launcher-json-1" in json.dumps(r)]
    assert (access["request_id"], access["status"], access["inputs"]) == ("launcher-json-1", 200, 2)
    assert "--json-output" in run.child_argv("embed")
