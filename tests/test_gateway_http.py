"""The gateway's HTTP contract: auth on every route, errors always JSON in the route's shape, limits."""

from __future__ import annotations

import json
import socket

import httpx
import pytest
from gateway_harness import EMBED_KEY, RERANK_KEY, Stack, auth, stack  # noqa: F401 - the fixture
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration

# (port index, method, path, body, key that opens it)
PROTECTED = [
    (0, "POST", "/v1/embeddings", {"input": "a"}, EMBED_KEY),
    (0, "POST", "/embeddings", {"input": "a"}, EMBED_KEY),
    (0, "GET", "/v1/models", None, EMBED_KEY),
    (0, "GET", "/v1/models/small", None, RERANK_KEY),  # listings take either key
    (0, "POST", "/embed", {"inputs": "a"}, EMBED_KEY),
    (0, "POST", "/embed_all", {"inputs": "a"}, EMBED_KEY),
    (0, "POST", "/embed_sparse", {"inputs": "a"}, EMBED_KEY),
    (0, "POST", "/similarity", {"inputs": {"source_sentence": "a", "sentences": ["b"]}}, EMBED_KEY),
    (0, "POST", "/tokenize", {"inputs": "a"}, EMBED_KEY),
    (0, "POST", "/decode", {"ids": [1, 2]}, EMBED_KEY),
    (0, "GET", "/info", None, EMBED_KEY),
    (0, "POST", "/", {"inputs": "a"}, EMBED_KEY),
    (0, "POST", "/invocations", {"inputs": "a"}, EMBED_KEY),
    (0, "POST", "/rerank", {"query": "q", "texts": ["a"]}, RERANK_KEY),
    (0, "POST", "/v1/rerank", {"query": "q", "documents": ["a"]}, RERANK_KEY),
    (0, "POST", "/v2/rerank", {"query": "q", "documents": ["a"]}, RERANK_KEY),
    (0, "POST", "/predict", {"inputs": ["a", "b"]}, RERANK_KEY),
    (0, "POST", "/models/BAAI/bge-m3/embed", {"inputs": "a"}, EMBED_KEY),
    (0, "POST", "/models/reranker/rerank", {"query": "q", "texts": ["a"]}, RERANK_KEY),
    (1, "POST", "/rerank", {"query": "q", "texts": ["a"]}, RERANK_KEY),
    (1, "POST", "/v1/rerank", {"query": "q", "documents": ["a"]}, RERANK_KEY),
    (1, "POST", "/v2/rerank", {"query": "q", "documents": ["a"]}, RERANK_KEY),
    (1, "GET", "/info", None, RERANK_KEY),
    (1, "POST", "/predict", {"inputs": ["a", "b"]}, RERANK_KEY),
]


@pytest.mark.parametrize(("port", "method", "path", "body", "key"), PROTECTED)
def test_every_route_but_health_needs_its_key(stack: Stack, port: int, method: str, path: str,  # noqa: F811
                                              body: object, key: str) -> None:
    """No key, a wrong key: 401 with an empty body. The other family's key is a valid key outside its
    scope: 403 naming only its own scope. The right key, in any of the header forms: 200."""
    url = stack.gateway.url(path, port)
    other = RERANK_KEY if key == EMBED_KEY else EMBED_KEY
    for wrong in [None, "nope", f"Bearer{key}", f"Basic {key}"]:
        headers = {} if wrong is None else {"Authorization": wrong if " " in wrong or wrong.startswith("Bearer")
                                            else f"Bearer {wrong}"}
        denied = httpx.request(method, url, json=body, headers=headers)
        assert (denied.status_code, denied.content) == (401, b""), (wrong, denied.text)
    if not path.startswith("/v1/models"):
        refused = httpx.request(method, url, json=body, headers=auth(other))
        assert refused.status_code == 403, refused.text
        assert other not in refused.text and "default" in refused.text
    for headers in ({"Authorization": f"bearer {key}"}, {"Authorization": key}, {"X-API-Key": key}, {"api-key": key}):
        assert httpx.request(method, url, json=body, headers=headers).status_code == 200, headers
    allowed = httpx.request(method, url, json=body, headers=auth(key))
    assert allowed.status_code == 200, allowed.text


@pytest.mark.parametrize("port", [0, 1])
@pytest.mark.parametrize("path", ["/health", "/ping"])
def test_health_and_ping_are_public(stack: Stack, path: str, port: int) -> None:  # noqa: F811
    assert httpx.get(stack.gateway.url(path, port)).status_code == 200
    assert httpx.head(stack.gateway.url(path, port)).status_code == 200


@pytest.mark.parametrize("port", [0, 1])
def test_metrics_is_public_and_labels_every_teis_families(stack: Stack, port: int) -> None:  # noqa: F811
    """Public as TEI's, on both doors: every TEI's te_* families with its model, kind and replica
    (tests/test_gateway_metrics.py has the rest of /metrics)."""
    for tei in stack.teis:  # TEI's /metrics is empty until its first request
        body = {"query": "q", "texts": ["a"]} if tei.kind == "rerank" else {"inputs": "a"}
        path = {"rerank": "/rerank", "sparse": "/embed_sparse"}.get(tei.kind, "/embed")
        assert httpx.post(tei.url + path, json=body, headers={"Authorization": f"Bearer {tei.key}"}).status_code == 200
    answer = httpx.get(stack.gateway.url("/metrics", port))
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    counts = next(f for f in text_string_to_metric_families(answer.text) if f.name == "te_request_count")
    labelled = {(s.labels["model"], s.labels["kind"], s.labels["replica"]) for s in counts.samples}
    assert labelled == {(tei.name, tei.kind, "0") for tei in stack.teis}


@pytest.mark.parametrize(("port", "path", "openai"), [(0, "/nowhere", False), (0, "/v1/nowhere", True),
                                                      (1, "/v1/embeddings", True), (1, "/embed", False),
                                                      (1, "/v1/models", True), (1, "/models/small/embed", False)])
def test_unknown_routes_are_404_json(stack: Stack, port: int, path: str, openai: bool) -> None:  # noqa: F811
    """Including the embedding routes on the reranking port."""
    r = httpx.post(stack.gateway.url(path, port), json={"inputs": "a"}, headers=auth())
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/json")
    assert ("message" in r.json()["error"]) if openai else ("error_type" in r.json())


@pytest.mark.parametrize(("path", "openai"), [("/v1/embeddings", True), ("/embed", False), ("/v1/rerank", True),
                                              ("/rerank", False)])
def test_bad_json_is_400_json_and_the_next_request_is_fine(stack: Stack, path: str,  # noqa: F811
                                                           openai: bool) -> None:
    key = RERANK_KEY if "rerank" in path else EMBED_KEY
    with httpx.Client(headers={**auth(key), "Content-Type": "application/json"}) as http:
        r = http.post(stack.gateway.url(path), content=b'{"input": ["a",')
        assert r.status_code == 400
        message = r.json()["error"]["message"] if openai else r.json()["error"]
        assert "Failed to parse the request body as JSON" in message
        assert http.post(stack.gateway.url("/embed"), json={"inputs": "a"}, headers=auth()).status_code == 200


def test_a_wrong_method_is_405_json(stack: Stack) -> None:  # noqa: F811
    r = httpx.get(stack.gateway.url("/embed"), headers=auth())
    assert r.status_code == 405 and r.json()["error_type"] == "Validation"


def test_an_oversized_body_is_413_json_and_nothing_else_is_disturbed(stack: Stack) -> None:  # noqa: F811
    """The limit is the gateway's (max_body_bytes, TEI's 2 MB by default); other requests carry on."""
    big = json.dumps({"inputs": ["x" * 1000] * 2100}).encode()
    r = httpx.post(stack.gateway.url("/embed"), content=big, headers={**auth(), "Content-Type": "application/json"})
    assert r.status_code == 413 and "larger than the limit of 2000000 bytes" in r.json()["error"]
    r = httpx.post(stack.gateway.url("/v1/embeddings"), content=big,
                   headers={**auth(), "Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    assert httpx.post(stack.gateway.url("/embed"), json={"inputs": "a"}, headers=auth()).status_code == 200


def test_teis_own_errors_pass_through_unchanged(stack: Stack) -> None:  # noqa: F811
    """TEI's 4xx and its body, as TEI wrote them (here: an empty input, and a reranker asked to embed)."""
    for path, body in (("/embed", {"inputs": ""}), ("/models/reranker/embed", {"inputs": "a"})):
        through = httpx.post(stack.gateway.url(path), json=body, headers=auth(RERANK_KEY if "reranker" in path
                                                                                else EMBED_KEY))
        tei = stack.reranker if "reranker" in path else stack.small
        direct = httpx.post(tei.url + "/embed", json=body, headers=auth(tei.key or ""))
        assert (through.status_code, through.content) == (direct.status_code, direct.content)


def test_cohere_routes_wrap_teis_errors_in_openai_shape(stack: Stack) -> None:  # noqa: F811
    """TEI's status and message kept (here 424: an embedder asked to rerank), in the route's shape."""
    r = httpx.post(stack.gateway.url("/models/small/v1/rerank"), json={"query": "q", "documents": ["a"]},
                   headers=auth(EMBED_KEY))
    assert r.status_code == 424 and r.json()["error"] == {
        "message": "Backend error: model is not a re-ranker model", "type": "Backend", "code": 424}


def test_a_rerank_for_an_unknown_model_is_404(stack: Stack) -> None:  # noqa: F811
    r = httpx.post(stack.gateway.url("/v1/rerank"), json={"model": "small", "query": "q", "documents": ["a"]},
                   headers=auth(RERANK_KEY))
    assert r.status_code == 404 and "reranker" in r.json()["error"]["message"]


def test_half_a_request_then_a_hang_up_disturbs_nothing(stack: Stack) -> None:  # noqa: F811
    with socket.create_connection(("127.0.0.1", stack.gateway.ports[0])) as sock:
        sock.sendall(b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"inp")
    assert httpx.post(stack.gateway.url("/embed"), json={"inputs": "a"}, headers=auth()).status_code == 200
