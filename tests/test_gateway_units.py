"""The gateway's pure parts: configuration, route table, batch cutting and joining, the Cohere dialect."""

from __future__ import annotations

import json

import pytest

from embed_launcher.gateway import batching, shapes
from embed_launcher.gateway.config import GatewayConfig, GatewayConfigError
from embed_launcher.gateway.dialects import cohere
from embed_launcher.gateway.relay import rename_model
from embed_launcher.gateway.routes import resolve, speaks_openai
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
    ("/metrics", "metrics", "metrics", None, None),
    ("/health", "metrics", "health", None, None),
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
    # the Prometheus port of EMBED_GATEWAY=false: /metrics and /health only, TEI itself has the rest
    ("/v1/embeddings", "metrics"), ("/rerank", "metrics"), ("/info", "metrics"), ("/models/small/embed", "metrics"),
])
def test_paths_outside_a_listener_are_404(path: str, routes: str) -> None:
    with pytest.raises(RequestError) as caught:
        resolve(path, routes, CONFIG)
    assert caught.value.status == 404


def test_the_entry_route_takes_the_id_encoded_or_not() -> None:
    assert resolve("/v1/models/BAAI%2Fbge-m3", "all", CONFIG).asked == "BAAI/bge-m3"
    assert resolve("/v1/models/BAAI/bge-m3", "all", CONFIG).asked == "BAAI/bge-m3"


# batches ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("route", "body", "sizes"), [
    ("/embed", {"inputs": ["a", "b", "c", "d", "e"], "normalize": False}, [2, 2, 1]),
    ("/embed", {"inputs": [1, 2, 3, 4, 5]}, None),  # one token-id input
    ("/embed", {"inputs": "one"}, None),
    ("/v1/embeddings", {"input": [[1], [2], [3]], "model": "m"}, [2, 1]),
    ("/rerank", {"query": "q", "texts": ["a", "b", "c"]}, [2, 1]),
    ("/predict", {"inputs": ["a", "b"]}, None),  # one pair
    ("/predict", {"inputs": [["a"], ["b", "c"], ["d"]]}, [2, 1]),
    ("/similarity", {"inputs": {"source_sentence": "s", "sentences": ["a", "b", "c"]},
                     "parameters": {"truncate": True}}, [1, 1, 1]),
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
    assert all(without_batch(c, split.field) == without_batch(body, split.field) for c in chunks)


def without_batch(body: dict[str, object], field: str) -> dict[str, object]:
    """``body`` with its batch (``field``, maybe `outer.inner`) removed: what every chunk must keep as is."""
    copy = json.loads(json.dumps(body))
    *outer, key = field.split(".")
    holder = copy
    for name in outer:
        holder = holder[name]
    holder.pop(key)
    return copy


def test_answers_join_in_order() -> None:
    assert json.loads(batching.merge_concat([b"[[1.0],[2.0]]", b" [[3.0]]\n"])) == [[1.0], [2.0], [3.0]]
    merged = json.loads(batching.merge_openai([
        json.dumps({"object": "list", "data": [{"object": "embedding", "embedding": [1], "index": 0},
                                               {"object": "embedding", "embedding": [2], "index": 1}],
                    "model": "m", "usage": {"prompt_tokens": 3, "total_tokens": 3}}).encode(),
        json.dumps({"object": "list", "data": [{"object": "embedding", "embedding": "AAA=", "index": 0}],
                    "model": "m", "usage": {"prompt_tokens": 2, "total_tokens": 2}}).encode()], [2, 1], "small"))
    assert [(d["index"], d["embedding"]) for d in merged["data"]] == [(0, [1]), (1, [2]), (2, "AAA=")]
    assert merged["usage"] == {"prompt_tokens": 5, "total_tokens": 5}
    assert (merged["object"], merged["model"]) == ("list", "small")
    ranked = batching.merge_rerank([b'[{"index":1,"score":0.5},{"index":0,"score":0.1}]',
                                    b'[{"index":0,"score":0.9}]'], 2)
    assert ranked == [{"index": 2, "score": 0.9}, {"index": 1, "score": 0.5}, {"index": 0, "score": 0.1}]


# the Cohere / Jina dialect ---------------------------------------------------------------------
def test_cohere_requests_become_tei_requests_and_back() -> None:
    """Strings or {"text"}; top_n cuts; return_documents echoes what was sent; scores are TEI's."""
    request = cohere.parse_rerank({"model": "reranker", "query": "q", "documents": ["a", {"text": "b", "id": 7}],
                                   "top_n": 1, "return_documents": True})
    assert request.tei_body() == {"query": "q", "texts": ["a", "b"], "raw_scores": False, "return_text": False,
                                  "truncate": True}
    answer = cohere.rerank_answer(request, [{"index": 0, "score": 0.2}, {"index": 1, "score": 0.7}], "reranker", 9,
                                  "2")
    assert answer["results"] == [{"index": 1, "relevance_score": 0.7, "document": {"text": "b", "id": 7}}]
    assert answer["model"] == "reranker" and answer["usage"]["total_tokens"] == 9
    assert answer["meta"]["api_version"] == {"version": "2"}


@pytest.mark.parametrize("body", [[], {"documents": ["a"]}, {"query": "q", "documents": []},
                                  {"query": "q", "documents": [3]}, {"query": "q", "documents": ["a"], "top_n": 0}])
def test_bad_cohere_requests_are_422(body: object) -> None:
    with pytest.raises(RequestError) as caught:
        cohere.parse_rerank(body)
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


def test_the_chunks_of_a_similarity_batch_keep_the_source_sentence_and_the_parameters() -> None:
    """The fields beside the batch, nested ones included, reach every chunk unchanged."""
    body = {"inputs": {"source_sentence": "s", "sentences": ["a", "b", "c"]}, "parameters": {"truncate": True}}
    chunks = batching.chunk_bodies(body, batching.SPLITS["/similarity"], "/similarity", 2)
    assert chunks is not None and len(chunks) == 3
    assert all(c["inputs"]["source_sentence"] == "s" and c["parameters"] == {"truncate": True} for c in chunks)
    assert without_batch(body, "inputs.sentences") == {"inputs": {"source_sentence": "s"},
                                                       "parameters": {"truncate": True}}


def test_an_openai_merge_splices_teis_bytes_and_renumbers() -> None:
    """TEI's exact answer shape: the data bytes are kept as they are, the indexes run on across chunks."""
    first = b'{"object":"list","data":[{"object":"embedding","embedding":[0.5,1e-3],"index":0}],' \
            b'"model":"BAAI/x","usage":{"prompt_tokens":4,"total_tokens":4}}'
    second = b'{"object":"list","data":[{"object":"embedding","embedding":[2.0,3.0],"index":0},' \
             b'{"object":"embedding","embedding":[4.0,5.0],"index":1}],"model":"BAAI/x",' \
             b'"usage":{"prompt_tokens":6,"total_tokens":6}}'
    merged = batching.merge_openai([first, second], [1, 2], "small")
    assert b"[0.5,1e-3]" in merged  # not re-serialised
    parsed = json.loads(merged)
    assert [d["index"] for d in parsed["data"]] == [0, 1, 2]
    assert parsed["usage"] == {"prompt_tokens": 10, "total_tokens": 10} and parsed["model"] == "small"


def test_tei_bodies_are_never_larger_than_the_clients() -> None:
    """CJK and emoji stay raw UTF-8 (ensure_ascii would double and triple them); no spaces added."""
    body = {"inputs": ["東京タワー" * 10, "🙂" * 10], "truncate": True}
    client = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    assert shapes.tei_body(body) == client
    assert len(shapes.tei_body(body)) < len(json.dumps(body).encode()) / 2


def test_routes_dispatch_on_a_typed_action_that_still_compares_as_its_string() -> None:
    from embed_launcher.gateway.routes import TABLES, Action

    assert {r.action for r in TABLES["all"].values()} == set(Action)
    assert TABLES["all"]["/health"].action == "health" and isinstance(TABLES["all"]["/health"].action, Action)
    assert TABLES["all"]["/embed"].allow == "POST" and TABLES["all"]["/info"].allow == "GET, HEAD"


def test_a_malformed_compute_tokens_header_counts_as_zero() -> None:
    from multidict import CIMultiDict, CIMultiDictProxy

    from embed_launcher.gateway.handlers import compute_tokens
    from embed_launcher.gateway.upstream import Reply

    def reply(value: str) -> Reply:
        return Reply(200, CIMultiDictProxy(CIMultiDict({"x-compute-tokens": value})), body=b"[]")

    assert [compute_tokens(reply(v)) for v in ("12", "abc", "", "-3", "1.5")] == [12, 0, 0, 0, 0]


@pytest.mark.parametrize(("path", "openai"), [
    ("/v1/embeddings", True), ("/embeddings", True), ("/v1/nothing", True), ("/v2/rerank", True),
    ("/models/no-such/v1/rerank", True), ("/models/org%2Fname/v2/rerank", True), ("/models/x/y/embeddings", True),
    ("/models/no-such/rerank", False), ("/embed", False), ("/models/no-such/embed", False), ("/nothing", False),
    # found by schemathesis: Ollama's /api/embeddings ends with OpenAI's /embeddings, but is Ollama's (TEI's shape)
    ("/models/no-such/api/embeddings", False), ("/models/no-such/v1/embed", True), ("/api/embed", False),
])
def test_an_unresolved_path_keeps_its_dialect(path: str, openai: bool) -> None:
    """An unknown model's 404 under /models/{name}/v1|v2/… is in OpenAI's shape, like the route it aimed at."""
    assert speaks_openai(path, "all") is openai
