"""The gateway's pure parts: configuration, route table, batch cutting and joining, the Cohere dialect."""

from __future__ import annotations

import json

import pytest

from embed_launcher.gateway import batching, shapes
from embed_launcher.gateway.app import Keys, authorised
from embed_launcher.gateway.config import GatewayConfig, GatewayConfigError
from embed_launcher.gateway.handlers import rename_model
from embed_launcher.gateway.routes import resolve
from embed_launcher.gateway.shapes import RequestError

EXAMPLE = {
    "listen": [{"host": "0.0.0.0", "port": 8000, "routes": "all"},
               {"host": "0.0.0.0", "port": 8001, "routes": "rerank"}],
    "models": [
        {"name": "BAAI/bge-small-en-v1.5", "aliases": ["small"], "kind": "embed", "upstream": "http://127.0.0.1:18000",
         "max_client_batch_size": 512, "default": True},
        {"name": "BAAI/bge-m3", "aliases": [], "kind": "embed", "upstream": "http://127.0.0.1:18002",
         "max_client_batch_size": 512, "default": False},
        {"name": "naver/splade", "aliases": [], "kind": "sparse", "upstream": "http://127.0.0.1:18003",
         "max_client_batch_size": 512, "default": True},
        {"name": "BAAI/bge-reranker-v2-m3", "aliases": ["reranker"], "kind": "rerank",
         "upstream": "http://127.0.0.1:18001", "max_client_batch_size": 512, "default": True},
    ],
    "wait_s": 30.0, "access_log": False, "workers": 1, "created": 1764230000,
}
CONFIG = GatewayConfig.from_dict(EXAMPLE)


def with_changes(**changes: object) -> dict[str, object]:
    return {**json.loads(json.dumps(EXAMPLE)), **changes}


# configuration ----------------------------------------------------------------------------------
def test_the_pinned_example_round_trips_through_json() -> None:
    """from_json(to_json(c)) == c, and the example is read as the issue pins it."""
    assert GatewayConfig.from_json(CONFIG.to_json()) == CONFIG
    assert CONFIG.find("small") is CONFIG.find("BAAI/bge-small-en-v1.5")
    reranker = CONFIG.default("rerank")
    assert reranker is not None and reranker.name == "BAAI/bge-reranker-v2-m3"


@pytest.mark.parametrize(("changes", "problem"), [
    ({"listen": []}, "listen: at least one listener"),
    ({"listen": [{"host": "h", "port": 0}]}, "listen[0].port: 0 is not a TCP port"),
    ({"listen": [{"host": "h", "port": 1, "routes": "embed"}]}, "listen[0].routes: 'embed' is not one of all, rerank"),
    ({"models": []}, "models: at least one model"),
    ({"wait_s": -1}, "wait_s: must be >= 0"),
    ({"workers": 0}, "workers: must be >= 1"),
    ({"workers": True}, "config.workers: wrong type bool"),
    ({"colour": "red"}, "config: unknown key 'colour'"),
])
def test_a_bad_configuration_names_its_problem(changes: dict[str, object], problem: str) -> None:
    """Each kind of mistake is named, with where it is."""
    with pytest.raises(GatewayConfigError) as caught:
        GatewayConfig.from_dict(with_changes(**changes))
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems


def test_every_model_problem_is_reported_at_once() -> None:
    """Duplicate names, a bad kind, a bad upstream and a missing default: one error listing all four."""
    data = with_changes()
    models = data["models"]
    assert isinstance(models, list)
    models[1]["aliases"] = ["small"]
    models[2]["kind"] = "dense"
    models[3]["upstream"] = "127.0.0.1:18001"
    models[0]["default"] = False
    with pytest.raises(GatewayConfigError) as caught:
        GatewayConfig.from_dict(data)
    text = str(caught.value)
    for expected in ("'small' is already used", "'dense' is not one of", "is not http://host:port",
                     "embed needs exactly one default, found 0"):
        assert expected in text
    assert text.startswith("invalid gateway configuration: ")


def test_not_json_is_one_problem() -> None:
    with pytest.raises(GatewayConfigError, match="not JSON"):
        GatewayConfig.from_json("{listen")


# routes -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("path", "routes", "action", "model", "key"), [
    ("/v1/embeddings", "all", "openai", None, "embed"),
    ("/v1/rerank", "all", "cohere", None, "rerank"),
    ("/v2/rerank", "rerank", "cohere", None, "rerank"),
    ("/rerank", "rerank", "rerank", None, "rerank"),
    ("/info", "all", "native", None, "embed"),
    ("/info", "rerank", "native", None, "rerank"),
    ("/health", "rerank", "health", None, None),
    ("/v1/models", "all", "models", None, "any"),
    ("/models/BAAI/bge-m3/embed", "all", "native", "BAAI/bge-m3", "embed"),
    ("/models/BAAI%2Fbge-m3/v1/embeddings", "all", "openai", "BAAI/bge-m3", "embed"),
    ("/models/reranker/rerank", "rerank", "rerank", "BAAI/bge-reranker-v2-m3", "rerank"),
    ("/models/naver/splade/embed_sparse", "all", "native", "naver/splade", "embed"),
])
def test_paths_resolve_to_a_route_a_model_and_a_key(path: str, routes: str, action: str, model: str | None,
                                                     key: str | None) -> None:
    """The route table per listener, the `/models/{name}/…` prefix (name with a raw or encoded slash)."""
    target = resolve(path, routes, CONFIG)
    assert target.route.action == action
    assert (target.model.name if target.model else None) == model
    assert target.key_kind(CONFIG) == key


@pytest.mark.parametrize(("path", "routes"), [
    ("/v1/embeddings", "rerank"), ("/embed", "rerank"), ("/v1/models", "rerank"), ("/nope", "all"),
    ("/models/small/embed", "rerank"), ("/models/unknown/embed", "all"), ("/models/small/health", "all"),
])
def test_paths_outside_a_listener_are_404(path: str, routes: str) -> None:
    with pytest.raises(RequestError) as caught:
        resolve(path, routes, CONFIG)
    assert caught.value.status == 404


def test_the_entry_route_takes_the_id_encoded_or_not() -> None:
    assert resolve("/v1/models/BAAI%2Fbge-m3", "all", CONFIG).asked == "BAAI/bge-m3"
    assert resolve("/v1/models/BAAI/bge-m3", "all", CONFIG).asked == "BAAI/bge-m3"


# keys ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("keys", "kind", "header", "ok"), [
    (Keys("e", "r"), "embed", "Bearer e", True),
    (Keys("e", "r"), "embed", "Bearer r", False),
    (Keys("e", "r"), "rerank", "Bearer r", True),
    (Keys("e", "r"), "any", "Bearer r", True),
    (Keys("e", "r"), "embed", "bearer e", False),  # TEI's rule: byte for byte
    (Keys("e", "r"), "embed", "Bearer e ", False),
    (Keys("e", "r"), "embed", None, False),
    (Keys("e", None), "rerank", None, True),  # that family's auth is off
    (Keys(None, None), "any", None, True),
])
def test_keys_follow_teis_bearer_rule(keys: Keys, kind: str, header: str | None, ok: bool) -> None:
    accepted = keys.accepted(kind)
    assert (accepted is None or authorised(header, accepted)) is ok


# batches ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("route", "body", "sizes"), [
    ("/embed", {"inputs": ["a", "b", "c", "d", "e"], "normalize": False}, [2, 2, 1]),
    ("/embed", {"inputs": [1, 2, 3, 4, 5]}, None),  # one token-id input
    ("/embed", {"inputs": "one"}, None),
    ("/v1/embeddings", {"input": [[1], [2], [3]], "model": "m"}, [2, 1]),
    ("/rerank", {"query": "q", "texts": ["a", "b", "c"]}, [2, 1]),
    ("/predict", {"inputs": ["a", "b"]}, None),  # one pair
    ("/predict", {"inputs": [["a"], ["b", "c"], ["d"]]}, [2, 1]),
    ("/similarity", {"inputs": {"source_sentence": "s", "sentences": ["a", "b", "c"]}}, [1, 1, 1]),
    ("/embed", {"inputs": ["a", "b"]}, None),
])
def test_a_batch_over_the_limit_is_cut_in_order(route: str, body: dict[str, object], sizes: list[int] | None) -> None:
    """Limit 2: chunks keep every other field, hold the items in order, and fit the limit."""
    split = batching.SPLITS[route]
    chunks = batching.chunk_bodies(body, split, route, 2)
    if sizes is None:
        assert chunks is None
        return
    assert chunks is not None
    parts = [batching.batch_of(c, split, route) or [] for c in chunks]
    assert [len(p) for p in parts] == sizes
    assert [x for p in parts for x in p] == batching.batch_of(body, split, route)
    assert all({k: v for k, v in c.items() if k not in ("inputs", "input", "texts")} ==
               {k: v for k, v in body.items() if k not in ("inputs", "input", "texts")} for c in chunks)


def test_answers_join_in_order() -> None:
    assert json.loads(batching.merge_concat([b"[[1.0],[2.0]]", b" [[3.0]]\n"])) == [[1.0], [2.0], [3.0]]
    merged = batching.merge_openai([
        json.dumps({"data": [{"object": "embedding", "embedding": [1], "index": 0},
                             {"object": "embedding", "embedding": [2], "index": 1}], "model": "m",
                    "usage": {"prompt_tokens": 3, "total_tokens": 3}}).encode(),
        json.dumps({"data": [{"object": "embedding", "embedding": [3], "index": 0}], "model": "m",
                    "usage": {"prompt_tokens": 2, "total_tokens": 2}}).encode()])
    assert [(d["index"], d["embedding"]) for d in merged["data"]] == [(0, [1]), (1, [2]), (2, [3])]
    assert merged["usage"] == {"prompt_tokens": 5, "total_tokens": 5}
    ranked = batching.merge_rerank([b'[{"index":1,"score":0.5},{"index":0,"score":0.1}]',
                                    b'[{"index":0,"score":0.9}]'], 2)
    assert ranked == [{"index": 2, "score": 0.9}, {"index": 1, "score": 0.5}, {"index": 0, "score": 0.1}]


# the Cohere / Jina dialect ---------------------------------------------------------------------
def test_cohere_requests_become_tei_requests_and_back() -> None:
    """Strings or {"text"}; top_n cuts; return_documents echoes what was sent; scores are TEI's."""
    request = shapes.parse_cohere({"model": "reranker", "query": "q", "documents": ["a", {"text": "b", "id": 7}],
                                   "top_n": 1, "return_documents": True})
    assert request.tei_body() == {"query": "q", "texts": ["a", "b"], "raw_scores": False, "return_text": False,
                                  "truncate": True}
    answer = shapes.cohere_answer(request, [{"index": 0, "score": 0.2}, {"index": 1, "score": 0.7}], "reranker", 9,
                                  "2")
    assert answer["results"] == [{"index": 1, "relevance_score": 0.7, "document": {"text": "b", "id": 7}}]
    assert answer["model"] == "reranker" and answer["usage"]["total_tokens"] == 9
    assert answer["meta"]["api_version"] == {"version": "2"}


@pytest.mark.parametrize("body", [[], {"documents": ["a"]}, {"query": "q", "documents": []},
                                  {"query": "q", "documents": [3]}, {"query": "q", "documents": ["a"], "top_n": 0}])
def test_bad_cohere_requests_are_422(body: object) -> None:
    with pytest.raises(RequestError) as caught:
        shapes.parse_cohere(body)
    assert caught.value.status == 422


def test_error_bodies_take_the_routes_shape() -> None:
    assert json.loads(shapes.error_body(404, "no", openai=True, code="model_not_found")) == {
        "error": {"message": "no", "type": "invalid_request_error", "code": "model_not_found"}}
    assert json.loads(shapes.error_body(413, "big", openai=False)) == {"error": "big", "error_type": "Validation"}


@pytest.mark.parametrize(("body", "expected"), [
    (b'{"data":[],"model":"BAAI/x","usage":{}}', b'{"data":[],"model":"small","usage":{}}'),
    (b'{"data":[],"model":"small","usage":{}}', b'{"data":[],"model":"small","usage":{}}'),
    (b'{"data":[]}', b'{"data":[]}'),
    (b'{"model": "a\\"b", "usage":{}}', b'{"model":"small", "usage":{}}'),
])
def test_the_answers_model_becomes_the_name_asked(body: bytes, expected: bytes) -> None:
    assert rename_model(body, "small") == expected
