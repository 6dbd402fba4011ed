"""Requests generated from the gateway's own OpenAPI document, sent to a real gateway in front of TEI stand-ins.

Both listeners, each against its own document. Every answer must have a documented status, a documented
content type and a body that matches the document; no 5xx; and no route answers without its key
(schemathesis' ignored_auth replays requests without it). Bounded for CI: a fixed seed, derandomised,
MAX_EXAMPLES per operation, each request within REQUEST_TIMEOUT_S (no per-example time limit: the machine
is shared), about 30 s on 2 cores. The number of generated requests is printed at the end of the module.
Every check holds on every operation: none is skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
import schemathesis
from gateway_harness import EMBED_KEY, RERANK_KEY, Stack, stack  # noqa: F401 - the fixture
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from embed_launcher.gateway import openapi

pytestmark = pytest.mark.integration

SEED = 16  # fixed: CI runs the same requests every time
MAX_EXAMPLES = 15  # per operation (and mode: valid and invalid bodies); 81 operations over both listeners
REQUEST_TIMEOUT_S = 30.0
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, ignored_auth]
UNKNOWN_MODEL = "no-such-model"
# The harness's stack (gateway_harness.make_teis and stack_models): every name a client may use → kind.
MODEL_KINDS = {"BAAI/bge-small-en-v1.5": "embed", "small": "embed", "BAAI/bge-m3": "embed",
               "naver/splade": "sparse", "BAAI/bge-reranker-v2-m3": "rerank", "reranker": "rerank"}


def with_model_names(document: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The document with `{model}` drawn from the served names (and one unknown name): random text would
    only ever meet the 404, never a model. The document itself names no model (it is public)."""
    document = json.loads(json.dumps(document))
    for item in document["paths"].values():
        for parameter in item.get("parameters", []):
            if parameter.get("name") == "model":  # the others are references to shared components
                parameter["schema"] = {"type": "string", "enum": [*names, UNKNOWN_MODEL]}
    return document


# Loaded from the pure builder at collection (the served copy is the same: test_gateway_openapi.py);
# schemathesis' lazy `from_fixture` loader does not run under pytest 9.
CONFIG = schemathesis.config.SchemathesisConfig.from_dict({
    "seed": SEED, "generation": {"max-examples": MAX_EXAMPLES, "mode": "all"},
    "phases": {"coverage": {"enabled": False}}})
api = schemathesis.openapi.from_dict(with_model_names(openapi.document("all"), sorted(MODEL_KINDS)), config=CONFIG)
rerank_api = schemathesis.openapi.from_dict(with_model_names(openapi.document("rerank"), sorted(MODEL_KINDS)),
                                            config=CONFIG)


@pytest.fixture(scope="module")
def sent(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """The requests sent, counted and printed once the module is done (the figure CI reports)."""
    labels: list[str] = []
    yield labels
    line = f"schemathesis: {len(labels)} generated requests sent to the gateway ({len(set(labels))} operations)"
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if capture is None:
        print(line)
        return
    with capture.global_and_fixture_disabled():  # on the terminal even when pytest captures output
        print(f"\n{line}")


def key_for(case: Any) -> str:
    """The key that opens the case's route: the model in the path decides, else the route's one key."""
    security = case.operation.definition.raw.get("security", [])
    model = unquote(str((case.path_parameters or {}).get("model", "")))
    if case.path.startswith("/models/") and model in MODEL_KINDS:
        return RERANK_KEY if MODEL_KINDS[model] == "rerank" else EMBED_KEY
    return RERANK_KEY if security == [{"rerankKey": []}] else EMBED_KEY


def call_and_check(case: Any, running: Stack, port_index: int, sent: list[str]) -> None:
    label = f"{case.method} {case.operation.path}"
    sent.append(f"{label} on listener {port_index}")
    case.call_and_validate(base_url=running.gateway.url("", port_index), checks=CHECKS, timeout=REQUEST_TIMEOUT_S,
                           headers={"Authorization": f"Bearer {key_for(case)}"})


BOUNDED = settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                   suppress_health_check=list(HealthCheck))


@api.parametrize()
@BOUNDED
def test_every_answer_is_documented(case: Any, stack: Stack, sent: list[str]) -> None:  # noqa: F811
    """A documented status and content type, a body that fits its schema, no 5xx, no route open without its key."""
    call_and_check(case, stack, 0, sent)


@rerank_api.parametrize()
@BOUNDED
def test_every_answer_of_the_rerank_listener_is_documented(case: Any, stack: Stack,  # noqa: F811
                                                           sent: list[str]) -> None:
    """The same on the reranking-only listener, against its own document."""
    call_and_check(case, stack, 1, sent)


@pytest.mark.parametrize("path", ["/models/a%0Ab/embed", "/embed%0A", "/v1/embeddings%0D%0A"])
def test_a_path_with_an_encoded_line_break_is_answered_in_json(stack: Stack, path: str) -> None:  # noqa: F811
    """Found by schemathesis: aiohttp's `.*` stops at a decoded line break, so such a path met aiohttp's own
    text/plain "404: Not Found" instead of the gateway's JSON 404."""
    answer = httpx.post(stack.gateway.url(path), json={"inputs": "a"}, headers={"Authorization": f"Bearer {EMBED_KEY}"},
                        timeout=10)
    assert answer.status_code == 404, answer.text
    assert answer.headers["content-type"].startswith("application/json"), answer.text
    body = answer.json()
    assert set(body) == ({"error"} if path.startswith("/v1/") else {"error", "error_type"}), body


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "TRACE"])
def test_the_document_takes_only_get_and_head(stack: Stack, method: str) -> None:  # noqa: F811 - the fixture
    """Found by schemathesis (unsupported methods): TRACE /openapi.json fell through to the router's 404."""
    answer = httpx.request(method, stack.gateway.url(openapi.OPENAPI_PATH), timeout=10)
    assert answer.status_code == 405, answer.text
    assert answer.headers["allow"] == "GET, HEAD" and set(answer.json()) == {"error", "error_type"}
