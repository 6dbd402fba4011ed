"""The gateway's OpenAPI 3.1 document, built from the route table so the two cannot drift (pure: no aiohttp).

Every route of ``routes.TABLES`` must have its bodies in ``BODIES``: a route added without them fails at
import, and tests/test_gateway_openapi.py walks the table against the document both ways.
"""

from __future__ import annotations

import re
from typing import Any

from embed_launcher import __version__
from embed_launcher.gateway.requestid import HEADER, MAX_ID_CHARS, TRACEPARENT
from embed_launcher.gateway.routes import MODEL_ENTRY, MODEL_PREFIX, PREFIXABLE, PUBLIC, TABLES, Action, Route
from embed_launcher.gateway.schemas import COMPONENTS, Schema, ref

OPENAPI_PATH = "/openapi.json"
MODEL_PARAMETER = "model"


def one_of(*names: str) -> Schema:
    return {"anyOf": [ref(name) for name in names]}


# What each route of the table reads and answers (None: no body). "/" and "/invocations" are the
# default model's route (embed, embed_sparse or rerank); "/rerank" also takes Cohere's shape.
BODIES: dict[str, tuple[Schema | None, Schema | None]] = {
    "/health": (None, None), "/ping": (None, None),
    "/v1/models": (None, ref("ModelList")), MODEL_ENTRY: (None, ref("Model")),
    "/info": (None, ref("Info")),
    "/metrics": (None, None),  # Prometheus text: see _responses
    "/embed": (ref("EmbedRequest"), ref("EmbedResponse")),
    "/embed_all": (ref("EmbedAllRequest"), ref("EmbedAllResponse")),
    "/embed_sparse": (ref("EmbedAllRequest"), ref("EmbedSparseResponse")),
    "/similarity": (ref("SimilarityRequest"), ref("SimilarityResponse")),
    "/predict": (ref("PredictRequest"), ref("PredictResponse")),
    "/tokenize": (ref("TokenizeRequest"), ref("TokenizeResponse")),
    "/decode": (ref("DecodeRequest"), ref("DecodeResponse")),
    "/rerank": (one_of("RerankRequest", "CohereRerankRequest"), one_of("RerankResponse", "CohereRerankResponse")),
    "/": (one_of("EmbedRequest", "RerankRequest"), one_of("EmbedResponse", "EmbedSparseResponse", "RerankResponse")),
    "/invocations": (one_of("EmbedRequest", "RerankRequest"),
                     one_of("EmbedResponse", "EmbedSparseResponse", "RerankResponse")),
    "/v1/embeddings": (ref("OpenAIEmbeddingsRequest"), ref("OpenAIEmbeddingsResponse")),
    "/embeddings": (ref("OpenAIEmbeddingsRequest"), ref("OpenAIEmbeddingsResponse")),
    "/v1/rerank": (ref("CohereRerankRequest"), ref("CohereRerankResponse")),
    "/v2/rerank": (ref("CohereRerankRequest"), ref("CohereRerankResponse")),
    "/v1/embed": (ref("CohereEmbedRequest"), ref("CohereEmbedResponse")),
    "/v2/embed": (ref("CohereEmbedRequest"), ref("CohereEmbedResponse")),
    "/api/embed": (ref("OllamaEmbedRequest"), ref("OllamaEmbedResponse")),
    "/api/embeddings": (ref("OllamaEmbeddingsRequest"), ref("OllamaEmbeddingsResponse")),
    "/api/tags": (None, ref("OllamaTags")),
    "/api/show": (ref("OllamaShowRequest"), ref("OllamaShow")),
    "/api/version": (None, ref("OllamaVersion")),
}
_MISSING = set(TABLES["all"]) - set(BODIES)
assert not _MISSING, f"routes without bodies in openapi.BODIES: {sorted(_MISSING)}"

STATUS_TEXT = {
    400: "The body is not JSON, or an input is empty", 401: "Missing, wrong or expired key",
    403: "The key may not use this route's scope or this model (the message says what it may use)",
    404: "No such model here (or no model of the route's kind is configured)",
    413: "The body is larger than the limit", 415: "The body is not `Content-Type: application/json`",
    422: "The body does not fit the route's schema, or an input is too long or the batch too large",
    424: "The model's server failed the inference (TEI's `Backend` error)",
    429: "The key is over its rpm (`Retry-After`), or the model's server is overloaded (TEI's `Overloaded`)",
    502: "The model's server dropped the request", 503: "The model's server is not ready within the wait",
    504: "The model's server did not answer within EMBED_GATEWAY_UPSTREAM_TIMEOUT",
}
POST_ERRORS = (400, 401, 403, 404, 413, 415, 422, 424, 429, 502, 503, 504)
GET_ERRORS = (401, 403, 404, 429, 502, 503, 504)
# TEI's own rejections (axum's, before its handler runs) are text/plain; the gateway relays them as they
# are on the native routes, where a client talks TEI's dialect.
TEI_PLAIN_TEXT = (400, 413, 415, 422)
SECURITY = {
    "embedKey": {"type": "http", "scheme": "bearer",
                 "description": "EMBED_GATEWAY_EMBED_KEY: the embedding and sparse models' routes"},
    "rerankKey": {"type": "http", "scheme": "bearer",
                  "description": "EMBED_GATEWAY_RERANK_KEY: the rerankers' routes"},
}
# A request's id (requestid.py): documented once as components, referenced by every path and every answer.
REQUEST_ID_SCHEMA: Schema = {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS, "pattern": "^[!-~]+$"}
PARAMETERS = {
    "RequestId": {
        "name": HEADER, "in": "header", "required": False, "schema": REQUEST_ID_SCHEMA,
        "description": "The request's id (printable ASCII without spaces, at most 128 characters): echoed in the "
                       "answer, sent on to the model's server and named in the gateway's log lines. Wins over "
                       "`traceparent`; one that breaks the rules is ignored.",
    },
    "Traceparent": {
        "name": TRACEPARENT, "in": "header", "required": False,
        "schema": {"type": "string", "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}"},
        "description": "A W3C Trace Context parent: without `X-Request-Id`, its trace-id is the request's id. "
                       "Sent on to the model's server unchanged; an invalid one is ignored.",
    },
}
HEADERS = {
    "RequestId": {
        "required": True, "schema": REQUEST_ID_SCHEMA,
        "description": "The request's id: the client's `X-Request-Id`, else its `traceparent`'s trace-id, else "
                       "one the gateway made up (32 hex digits). On every answer, errors included.",
    },
}
REQUEST_ID_PARAMETERS = [{"$ref": f"#/components/parameters/{name}"} for name in PARAMETERS]
REQUEST_ID_HEADERS = {HEADER: {"$ref": "#/components/headers/RequestId"}}

DESCRIPTION = (
    "One HTTP door in front of many Text Embeddings Inference servers: OpenAI embeddings, Cohere embed and "
    "Cohere/Jina rerank (v1, v2), Ollama's embedding API (`/api/…`) and TEI's native routes. "
    "`/models/{model}/<route>` reaches the model named in the path (a served name or an alias; percent-encode "
    "its `/` as `%2F`); otherwise the body's `model`, else the route's default model. A route of an embedding "
    "model takes the embedding key, a reranker's route the reranking key; a gateway started without keys is "
    "open. Errors are OpenAI's nested `{\"error\":{…}}` on `/v1/…`, `/v2/…` and `/embeddings`, TEI's flat "
    "`{\"error\",\"error_type\"}` on TEI's and Ollama's routes (where TEI's own rejections stay text/plain, as "
    "TEI sends them). A method a route does not take is answered 405 with `Allow`.")


def document(routes: str = "all") -> dict[str, Any]:
    """The OpenAPI document of a listener serving ``routes`` (`all`, `rerank` or `metrics`)."""
    table = TABLES[routes]
    paths: dict[str, Any] = {OPENAPI_PATH: {"parameters": REQUEST_ID_PARAMETERS, **_openapi_path()}}
    for path, route in table.items():
        paths[openapi_path(path)] = _path_item(route, prefixed=False)
    for path, route in table.items():
        if path in PREFIXABLE:
            paths[openapi_path(path, prefixed=True)] = _path_item(route, prefixed=True)
    return {
        "openapi": "3.1.0",
        "info": {"title": "embed-launcher gateway", "version": __version__, "description": DESCRIPTION},
        "paths": paths,
        "components": {"schemas": COMPONENTS, "parameters": PARAMETERS, "headers": HEADERS,
                       "securitySchemes": SECURITY},
    }


def openapi_path(path: str, prefixed: bool = False) -> str:
    """The document's path for a route of the table: `/v1/models/` is `/v1/models/{model}`."""
    if prefixed:
        return f"{MODEL_PREFIX}{{{MODEL_PARAMETER}}}{path}"
    return f"{path}{{{MODEL_PARAMETER}}}" if path == MODEL_ENTRY else path


def _path_item(route: Route, prefixed: bool) -> dict[str, Any]:
    item: dict[str, Any] = {"parameters": list(REQUEST_ID_PARAMETERS)}
    if prefixed or route.path == MODEL_ENTRY:
        item["parameters"].insert(0, {"name": MODEL_PARAMETER, "in": "path", "required": True,
                                      "schema": {"type": "string"},
                                      "description": "a served model name or alias (`/` percent-encoded as `%2F`)"})
    for method in sorted(route.methods):
        item[method.lower()] = _operation(route, method, prefixed)
    return item


def _operation(route: Route, method: str, prefixed: bool) -> dict[str, Any]:
    request, answer = BODIES[route.path]
    operation: dict[str, Any] = {
        "operationId": _operation_id(method, openapi_path(route.path, prefixed)),
        "tags": [_tag(route)],
        "security": _security(route, prefixed),
        "responses": _responses(route, method, answer),
    }
    if request is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": request}}}
    return operation


def _operation_id(method: str, path: str) -> str:
    return method.lower() + (re.sub(r"[^A-Za-z0-9]+", "_", path).rstrip("_") or "_root")


TAGS = {"openai": "OpenAI", "cohere": "Cohere and Jina", "ollama": "Ollama", "tei": "TEI"}


def _tag(route: Route) -> str:
    if route.action in (Action.HEALTH, Action.MODELS, Action.MODEL):
        return "gateway"
    return TAGS[route.dialect]


def _security(route: Route, prefixed: bool) -> list[dict[str, list[str]]]:
    """Which key a route takes; either (whichever the reached model's kind needs) where the table cannot tell."""
    if route.action in PUBLIC:
        return []
    if not prefixed and route.kinds == ("rerank",):
        return [{"rerankKey": []}]
    if not prefixed and route.kinds and "rerank" not in route.kinds:
        return [{"embedKey": []}]
    return [{"embedKey": []}, {"rerankKey": []}]


def _responses(route: Route, method: str, answer: Schema | None) -> dict[str, Any]:
    head = method == "HEAD"
    ok: dict[str, Any] = {"description": "OK", "headers": REQUEST_ID_HEADERS}
    if answer is not None and not head:
        ok["content"] = {"application/json": {"schema": answer}}
    responses: dict[str, Any] = {"200": ok}
    if route.action == Action.HEALTH:
        statuses: tuple[int, ...] = (503,)
    elif route.action == Action.OLLAMA_VERSION:
        statuses = ()
    elif route.action in (Action.MODELS, Action.OLLAMA_TAGS):
        statuses = (401, 429)
    elif route.action == Action.MODEL:
        statuses = (401, 404, 429)
    elif route.action == Action.OLLAMA_SHOW:
        statuses = (400, 401, 404, 413, 415, 429)
    elif route.action == Action.METRICS:
        statuses = (401, 403)  # EMBED_METRICS_AUTH=true: no key, or one without the metrics scope
        if not head:
            ok["content"] = {"text/plain": {"schema": {"type": "string"}}}
    else:
        statuses = POST_ERRORS if method == "POST" else GET_ERRORS
    for status in statuses:
        responses[str(status)] = _error(status, route.openai, head)
    if route.action == "health":
        responses["503"]["description"] = "A model has not been ready yet since the gateway started"
    return responses


def _error(status: int, openai: bool, head: bool) -> dict[str, Any]:
    response: dict[str, Any] = {"description": STATUS_TEXT.get(status, "The gateway is waiting for its models"),
                                "headers": REQUEST_ID_HEADERS}
    if status == 401 or head:
        return response  # TEI's rule: a bare 401, no body
    content = {"application/json": {"schema": ref("OpenAIError" if openai else "TeiError")}}
    if not openai and status in TEI_PLAIN_TEXT:
        content["text/plain"] = {"schema": {"type": "string"}}
    response["content"] = content
    return response


def _openapi_path() -> dict[str, Any]:
    answer = {"200": {"description": "This document", "headers": REQUEST_ID_HEADERS,
                      "content": {"application/json": {"schema": {"type": "object"}}}}}
    head = {"200": {"description": "OK", "headers": REQUEST_ID_HEADERS}}
    return {method: {"operationId": f"{method}_openapi", "tags": ["gateway"], "security": [],
                     "responses": answer if method == "get" else head}
            for method in ("get", "head")}
