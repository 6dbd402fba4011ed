"""The gateway's OpenAPI document: valid OpenAPI 3.1, and the route table and the document cover each other."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import jsonschema_rs
import pytest
import schemathesis
from gateway_harness import Stack, stack  # noqa: F401 - the fixture

from embed_launcher.gateway import openapi, requestid
from embed_launcher.gateway.config import GatewayConfig
from embed_launcher.gateway.routes import PREFIXABLE, TABLES, Action, Route, resolve
from embed_launcher.gateway.shapes import RequestError

HTTP_METHODS = ("get", "head", "post", "put", "patch", "delete", "options", "trace")
CONFIG = GatewayConfig.from_dict({
    "listen": [{"host": "127.0.0.1", "port": 8000}],
    "models": [{"name": "BAAI/bge-m3", "aliases": ["m3"], "kind": "embed", "upstream": "http://127.0.0.1:1",
                "default": True},
               {"name": "naver/splade", "kind": "sparse", "upstream": "http://127.0.0.1:2", "default": True},
               {"name": "BAAI/bge-reranker-v2-m3", "kind": "rerank", "upstream": "http://127.0.0.1:3",
                "default": True}],
})
SERVED = {"embed": "BAAI/bge-m3", "sparse": "naver/splade", "rerank": "BAAI/bge-reranker-v2-m3"}


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method in HTTP_METHODS:
            if method in item:
                yield path, method, item[method]


def expected_paths(table: dict[str, Route]) -> dict[str, set[str]]:
    """What the table serves, as the document should spell it: path → lower-case methods."""
    paths = {openapi.OPENAPI_PATH: {"get", "head"}}
    for path, route in table.items():
        methods = {m.lower() for m in route.methods}
        paths[openapi.openapi_path(path)] = methods
        if path in PREFIXABLE:
            paths[openapi.openapi_path(path, prefixed=True)] = methods
    return paths


def table_path(path: str) -> str:
    """The table's key for a documented path: `/models/{model}/embed` is `/embed`, `/v1/models/{model}` is
    `/v1/models/`."""
    return path.removeprefix("/models/{model}").removesuffix("{model}")


def uncovered(table: dict[str, Route], document: dict[str, Any]) -> list[str]:
    """Differences between the table and the document, both ways (empty when they agree)."""
    wanted = expected_paths(table)
    documented = {path: {m for m in HTTP_METHODS if m in item} for path, item in document["paths"].items()}
    problems = [f"{p} {sorted(m)}: not in the document" for p, m in wanted.items() if p not in documented]
    problems += [f"{p}: documented, not served" for p in documented if p not in wanted]
    problems += [f"{p}: methods {sorted(documented[p])}, served {sorted(m)}" for p, m in wanted.items()
                 if p in documented and documented[p] != m]
    return problems


@pytest.mark.parametrize("routes", ["all", "rerank"])
def test_the_document_is_valid_openapi_3(routes: str) -> None:
    """schemathesis' OpenAPI 3.1 meta-schema accepts it; every body schema is valid JSON Schema 2020-12."""
    document = openapi.document(routes)
    assert document["openapi"].startswith("3.")
    schemathesis.openapi.from_dict(document).validate()
    for schema in document["components"]["schemas"].values():
        jsonschema_rs.meta.validate(schema)


def test_the_validator_would_catch_a_broken_document() -> None:
    """The check above can fail: a response without its description is refused."""
    document = openapi.document()
    document["paths"]["/embed"]["post"]["responses"]["200"] = {"content": {}}
    with pytest.raises(Exception, match="description"):
        schemathesis.openapi.from_dict(document).validate()


def test_every_reference_resolves() -> None:
    """Each `$ref` names a component that exists (a schema, a parameter or a header)."""
    document = openapi.document()
    refs = set(_refs(document))
    assert refs and all(ref.startswith(("#/components/schemas/", "#/components/parameters/",
                                        "#/components/headers/")) for ref in refs)
    for reference in refs:
        section, name = reference.removeprefix("#/components/").split("/")
        assert name in document["components"][section], reference


@pytest.mark.parametrize("routes", ["all", "rerank"])
def test_request_id_headers_are_documented_once_and_referenced_everywhere(routes: str) -> None:
    """`X-Request-Id` and `traceparent` are optional request headers of every path, and every answer (errors
    and /openapi.json's own included) carries `X-Request-Id`: one component each, referenced, not copied."""
    document = openapi.document(routes)
    parameters, headers = document["components"]["parameters"], document["components"]["headers"]
    assert {(p["name"], p["in"], p["required"]) for p in parameters.values()} == {
        ("X-Request-Id", "header", False), ("traceparent", "header", False)}
    assert headers["RequestId"]["required"] is True
    assert parameters["RequestId"]["schema"]["maxLength"] == requestid.MAX_ID_CHARS
    wanted = [{"$ref": "#/components/parameters/RequestId"}, {"$ref": "#/components/parameters/Traceparent"}]
    for path, item in document["paths"].items():
        assert [p for p in item.get("parameters", []) if "$ref" in p] == wanted, path
    answers = [(path, status, response) for path, _, operation in operations(document)
               for status, response in operation["responses"].items()]
    assert len(answers) > 100
    for path, status, response in answers:
        assert response["headers"] == {"X-Request-Id": {"$ref": "#/components/headers/RequestId"}}, (path, status)


def _refs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        if "$ref" in node:
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


@pytest.mark.parametrize("routes", ["all", "rerank"])
def test_the_document_covers_every_route_and_nothing_else(routes: str) -> None:
    """Every route of the table, plain and under /models/{model}/, with its methods; no path the table lacks."""
    assert uncovered(TABLES[routes], openapi.document(routes)) == []


def test_the_coverage_check_sees_a_route_the_document_lacks() -> None:
    """The walk above can fail: a route added to the table, or dropped from it, is reported."""
    table = dict(TABLES["all"])
    table["/vertex"] = Route("/vertex", frozenset({"POST"}), Action.NATIVE, ("embed",))
    assert uncovered(table, openapi.document()) == ["/vertex ['post']: not in the document"]
    del table["/vertex"], table["/ping"]
    assert uncovered(table, openapi.document()) == ["/ping: documented, not served"]


@pytest.mark.parametrize("routes", ["all", "rerank"])
def test_every_documented_path_resolves_to_its_route(routes: str) -> None:
    """The router itself agrees: each path, {model} filled with a served name, reaches the documented route."""
    for path, method, _ in operations(openapi.document(routes)):
        if path == openapi.OPENAPI_PATH:
            continue
        kinds = ("rerank",) if routes == "rerank" else ("embed", "sparse", "rerank")
        route = TABLES[routes][table_path(path)]
        kind = next((k for k in route.kinds if k in kinds), "embed")
        target = resolve(path.replace("{model}", quote(SERVED[kind], safe="")), routes, CONFIG)
        assert target.route == route, path
        assert method.upper() in target.route.methods, (path, method)


def test_a_rerank_listener_documents_no_embedding_route() -> None:
    """What the reranking-only listener does not serve is not in its document either."""
    paths = openapi.document("rerank")["paths"]
    assert "/v1/embeddings" not in paths and "/models/{model}/embed" not in paths and "/v1/models" not in paths
    prefixed = [path for path in paths if path.startswith("/models/{model}")]
    assert len(prefixed) == 9  # rerank v1, v2, native, predict, info, tokenize, decode, /, invocations
    for path in prefixed:  # and its router refuses to reach an embedding model there
        with pytest.raises(RequestError):
            resolve(path.replace("{model}", quote(SERVED["embed"], safe="")), "rerank", CONFIG)


def test_error_shapes_follow_the_route_dialect() -> None:
    """OpenAI's nested error on /v1, /v2 and /embeddings; TEI's flat one (or TEI's text/plain) on native routes."""
    document = openapi.document()
    for path, _, operation in operations(document):
        route = TABLES["all"].get(table_path(path))
        for status, response in operation["responses"].items():
            if status.startswith("2") or "content" not in response:
                continue
            schema = response["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
            assert route is not None
            assert schema == ("OpenAIError" if route.openai else "TeiError"), (path, status)
            assert route.openai == path.startswith(("/v1/", "/v2/", "/embeddings", "/models/{model}/v1/",
                                                    "/models/{model}/v2/", "/models/{model}/embeddings"))


def test_keys_are_documented_per_route() -> None:
    """Health is public; embedding routes take the embedding key, reranking ones the reranking key."""
    document = openapi.document()
    assert set(document["components"]["securitySchemes"]) == {"embedKey", "rerankKey"}
    security = {(p, m): op["security"] for p, m, op in operations(document)}
    assert security[("/health", "get")] == [] and security[(openapi.OPENAPI_PATH, "get")] == []
    assert security[("/v1/embeddings", "post")] == [{"embedKey": []}]
    assert security[("/embed_sparse", "post")] == [{"embedKey": []}]
    assert security[("/v1/rerank", "post")] == [{"rerankKey": []}]
    either: list[dict[str, list[str]]] = [{"embedKey": []}, {"rerankKey": []}]
    assert security[("/models/{model}/rerank", "post")] == either and security[("/v1/models", "get")] == either
    assert openapi.document("rerank")["paths"]["/info"]["get"]["security"] == [{"rerankKey": []}]


def test_every_operation_id_is_unique() -> None:
    ids = [op["operationId"] for _, _, op in operations(openapi.document())]
    assert len(ids) == len(set(ids))


@pytest.mark.integration
def test_the_gateway_serves_its_document_without_a_key(stack: Stack) -> None:  # noqa: F811 - the fixture
    """GET /openapi.json answers the listener's own document, publicly, on both listeners."""
    for index, routes in enumerate(("all", "rerank")):
        answer = httpx.get(stack.gateway.url(openapi.OPENAPI_PATH, index), timeout=10)
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/json")
        assert answer.json() == json.loads(json.dumps(openapi.document(routes)))
    assert httpx.head(stack.gateway.url(openapi.OPENAPI_PATH), timeout=10).status_code == 200
