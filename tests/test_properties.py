"""Properties of the gateway's pure modules, for any input hypothesis finds: routes, batching, error shapes."""

from __future__ import annotations

import json
import zlib
from typing import Any
from urllib.parse import quote

import jsonschema_rs
from hypothesis import given, settings
from hypothesis import strategies as st

from embed_launcher.gateway import batching, openapi, shapes
from embed_launcher.gateway.config import GatewayConfig
from embed_launcher.gateway.dialects import cohere
from embed_launcher.gateway.routes import MODEL_ENTRY, MODEL_PREFIX, TABLES, default_model, resolve
from embed_launcher.gateway.shapes import RequestError

# Bounded and reproducible: CI runs the same examples every time, in a few seconds.
BOUNDED = settings(max_examples=300, deadline=None, derandomize=True, database=None)
CONFIG = GatewayConfig.from_dict({
    "listen": [{"host": "127.0.0.1", "port": 8000}],
    "models": [
        {"name": "BAAI/bge-small-en-v1.5", "aliases": ["small"], "kind": "embed", "upstream": "http://127.0.0.1:1",
         "default": True},
        {"name": "BAAI/bge-m3", "kind": "embed", "upstream": "http://127.0.0.1:2"},
        {"name": "naver/splade", "kind": "sparse", "upstream": "http://127.0.0.1:3", "default": True},
        {"name": "BAAI/bge-reranker-v2-m3", "aliases": ["reranker", "BAAI"], "kind": "rerank",
         "upstream": "http://127.0.0.1:4", "default": True},
    ],
})
NAMES = [name for model in CONFIG.models for name in model.names]
ROUTE_PATHS = sorted(TABLES["all"])


# routes -------------------------------------------------------------------------------------------
@st.composite
def paths(draw: st.DrawFn) -> str:
    """Paths near the real ones (a model name, maybe encoded, then a route, maybe mangled) and any text."""
    name = draw(st.sampled_from(NAMES) | st.text(max_size=12))
    name = draw(st.sampled_from([name, quote(name, safe=""), quote(name)]))
    route = draw(st.sampled_from(ROUTE_PATHS) | st.text(max_size=12))
    prefix = draw(st.sampled_from([MODEL_PREFIX, MODEL_ENTRY, "/", "", "/models", "/v1/"]))
    made = f"{prefix}{name}{route}" if prefix in (MODEL_PREFIX, MODEL_ENTRY) else prefix + route
    return draw(st.sampled_from([made, made.upper(), made + "/"]) | st.text(max_size=40))


@BOUNDED
@given(path=paths(), routes=st.sampled_from(["all", "rerank"]))
def test_any_path_resolves_or_is_a_404(path: str, routes: str) -> None:
    """Every path is a route of the listener's table, or RequestError 404; nothing else escapes."""
    try:
        target = resolve(path, routes, CONFIG)
    except RequestError as err:
        assert err.status == 404 and err.code == "not_found"
        return
    assert target.route in TABLES[routes].values()
    assert target.model is None or target.model in CONFIG.models


@BOUNDED
@given(path=paths())
def test_a_rerank_listener_never_reaches_an_embedding_model(path: str) -> None:
    """On the reranking-only listener, neither the path's model nor the route's default is anything but a reranker."""
    try:
        target = resolve(path, "rerank", CONFIG)
    except RequestError:
        return
    assert target.model is None or target.model.kind == "rerank", (path, target.model)
    default = default_model(target.route, CONFIG)
    assert default is None or default.kind == "rerank", (path, default)
    assert target.key_kind(CONFIG) in (None, "any", "rerank")


@BOUNDED
@given(name=st.sampled_from(NAMES), route=st.sampled_from(ROUTE_PATHS), encode=st.booleans())
def test_a_model_in_the_path_is_the_model_reached(name: str, route: str, encode: bool) -> None:
    """`/models/{name}/{route}` reaches that model (longest name first: `BAAI` never shadows `BAAI/bge-m3`)."""
    path = f"{MODEL_PREFIX}{quote(name, safe='') if encode else name}{route}"
    try:
        target = resolve(path, "all", CONFIG)
    except RequestError:
        assert route in ("/health", "/ping", "/v1/models", MODEL_ENTRY, "/api/tags", "/api/show",
                         "/api/version", "/metrics")  # not prefixable
        return
    assert target.model is CONFIG.find(name) and target.asked == name and target.route.path == route


# batching -----------------------------------------------------------------------------------------
TEXT = st.text(min_size=1, max_size=8)
IDS = st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=4)
ITEMS: dict[str, st.SearchStrategy[Any]] = {
    "/embed": TEXT | IDS, "/embed_all": TEXT | IDS, "/embed_sparse": TEXT, "/tokenize": TEXT,
    "/v1/embeddings": TEXT | IDS, "/embeddings": TEXT, "/predict": st.lists(TEXT, min_size=1, max_size=2),
    "/decode": IDS, "/similarity": TEXT, "/rerank": TEXT,
}
OTHER = {"truncate": True, "normalize": False, "model": "m", "query": "q", "parameters": {"truncate": True}}


def body_for(route: str, items: list[Any]) -> dict[str, Any]:
    split = batching.SPLITS[route]
    if split.field == "inputs.sentences":
        return {"inputs": {"source_sentence": "s", "sentences": items}, **OTHER}
    if route == "/v1/embeddings" or route == "/embeddings":  # a batch of ONE token-id list reads as one input
        items = [item for item in items if isinstance(item, str)] or ["x"]
    return {split.field: items, **OTHER}


def score_of(item: Any) -> float:
    return float(zlib.crc32(json.dumps(item).encode()) % 1000)


def answer(route: str, chunk: dict[str, Any]) -> bytes:
    """What TEI answers for a chunk, made so each result names its input: the merge must keep the pairing."""
    items = batching.batch_of(chunk, batching.SPLITS[route], route) or []
    if batching.SPLITS[route].merge == "openai":
        return json.dumps({"object": "list", "model": "m", "usage": {"prompt_tokens": 1, "total_tokens": 1},
                           "data": [{"object": "embedding", "embedding": item, "index": i}
                                    for i, item in enumerate(items)]}).encode()
    if batching.SPLITS[route].merge == "rerank":  # sorted by score, as TEI sends it
        scores = [(i, score_of(item)) for i, item in enumerate(items)]
        return json.dumps([{"index": i, "score": s} for i, s in sorted(scores, key=lambda p: -p[1])]).encode()
    return json.dumps([{"of": item} for item in items]).encode()


@BOUNDED
@given(data=st.data(), route=st.sampled_from(sorted(batching.SPLITS)), limit=st.integers(1, 7))
def test_chunk_then_merge_is_the_identity(data: st.DataObject, route: str, limit: int) -> None:
    """Cut to the limit, answered chunk by chunk, joined: every input's answer, in the client's order."""
    split = batching.SPLITS[route]
    items = data.draw(st.lists(ITEMS[route], min_size=2, max_size=20), label="items")
    body = body_for(route, items)
    items = batching.batch_of(body, split, route) or []
    chunks = batching.chunk_bodies(body, split, route, limit)
    if chunks is None:
        assert len(items) + split.extra <= limit
        return
    assert len(items) + split.extra > limit and len(chunks) > 1
    batches = [batching.batch_of(chunk, split, route) for chunk in chunks]
    assert [item for batch in batches for item in batch or []] == items  # nothing lost, nothing moved
    for chunk, batch in zip(chunks, batches, strict=True):
        assert batch is not None and len(batch) + split.extra <= max(limit, split.extra + 1)
        outer = split.field.split(".", 1)[0]
        assert {k: v for k, v in chunk.items() if k != outer} == {k: v for k, v in body.items() if k != outer}
        if route == "/similarity":  # the other fields, unchanged, the source sentence in every chunk
            assert chunk["inputs"]["source_sentence"] == body["inputs"]["source_sentence"]
    answers = [answer(route, chunk) for chunk in chunks]
    if split.merge == "concat":
        assert json.loads(batching.merge_concat(answers)) == [{"of": item} for item in items]
    elif split.merge == "openai":
        sizes = [len(batch or []) for batch in batches]
        merged = json.loads(batching.merge_openai(answers, sizes, "m"))
        assert merged["model"] == "m"
        assert [d["embedding"] for d in merged["data"]] == items
        assert [d["index"] for d in merged["data"]] == list(range(len(items)))
        assert merged["usage"] == {"prompt_tokens": len(chunks), "total_tokens": len(chunks)}
    else:
        size = len(batches[0] or [])
        merged_rerank = batching.merge_rerank(answers, size)
        assert sorted(r["index"] for r in merged_rerank) == list(range(len(items)))
        for result in merged_rerank:  # the shifted index still names the input that was scored
            assert result["score"] == score_of(items[result["index"]])
        assert [r["score"] for r in merged_rerank] == sorted((r["score"] for r in merged_rerank), reverse=True)


def test_the_chunk_property_covers_every_split_route() -> None:
    """A route added to batching.SPLITS without items here would go untested."""
    assert set(ITEMS) == set(batching.SPLITS)


# error shapes ----------------------------------------------------------------------------------------
SCHEMAS = openapi.document()["components"]["schemas"]
OPENAI_ERROR = jsonschema_rs.validator_for(SCHEMAS["OpenAIError"])
TEI_ERROR = jsonschema_rs.validator_for(SCHEMAS["TeiError"])
STATUSES = st.sampled_from(sorted({*shapes.OPENAI_TYPES, *shapes.TEI_TYPES, 500})) | st.integers(400, 599)


@BOUNDED
@given(status=STATUSES, message=st.text(), openai_shape=st.booleans(), code=st.none() | st.text(max_size=20))
def test_every_gateway_error_body_is_its_api_shape(status: int, message: str, openai_shape: bool,
                                                   code: str | None) -> None:
    """OpenAI's nested error or TEI's flat one, as the document says, with the message intact."""
    body = json.loads(shapes.error_body(status, message, openai_shape, code))
    if openai_shape:
        OPENAI_ERROR.validate(body)
        assert body["error"]["message"] == message
    else:
        TEI_ERROR.validate(body)
        assert body["error"] == message


TEI_BODIES = (
    st.builds(lambda m, t: json.dumps({"error": m, "error_type": t}).encode(), st.text(),
              st.sampled_from(["Validation", "Empty", "Backend", "Overloaded", "Tokenizer", "Unhealthy"]))
    | st.builds(lambda m, s, t: json.dumps({"message": m, "code": s, "type": t}).encode(), st.text(),
                st.integers(400, 599), st.text())
    | st.text().map(str.encode)  # axum's text/plain rejections
    | st.binary(max_size=40)
    | st.dictionaries(st.sampled_from(["error", "error_type", "message", "type", "code"]),
                      st.none() | st.integers() | st.text(max_size=5), max_size=4).map(lambda d: json.dumps(d).encode())
    | st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                   lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                   max_leaves=8).map(lambda value: json.dumps(value).encode())
)


@BOUNDED
@given(status=st.integers(400, 599), raw=TEI_BODIES)
def test_a_tei_error_reshaped_for_cohere_is_openai_shape(status: int, raw: bytes) -> None:
    """Whatever TEI answered (its JSON, its OpenAI-flat JSON, axum's text, garbage), the Cohere routes answer
    OpenAI's nested error with the HTTP status as its code."""
    body = json.loads(shapes.reshape_tei_error(status, raw))
    OPENAI_ERROR.validate(body)
    assert body["error"]["code"] == status


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=6),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                                max_size=4), max_leaves=12)
COHERE_KEYS = st.sampled_from(["model", "query", "documents", "texts", "top_n", "return_documents", "rank_fields"])


@BOUNDED
@given(body=JSON | st.dictionaries(COHERE_KEYS, JSON, max_size=7))
def test_any_cohere_body_is_read_or_refused_with_a_422(body: Any) -> None:
    """A Cohere/Jina rerank body is read, or refused with RequestError 422; never another exception (a 500)."""
    try:
        cohere.parse_rerank(body)
    except RequestError as err:
        assert err.status == 422
