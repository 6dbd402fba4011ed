"""The dialects, as pure functions: error bodies, OpenAI model entries, Cohere/Jina rerank to and from TEI's."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from embed_launcher.gateway.config import ModelRoute

# OpenAI's error "type" for a status the gateway itself answers with.
OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                429: "rate_limit_error", 404: "invalid_request_error",
                405: "invalid_request_error", 413: "invalid_request_error", 415: "invalid_request_error",
                422: "invalid_request_error", 502: "api_error", 503: "service_unavailable"}
# TEI's error_type for the same statuses (PascalCase, as TEI serialises its enum).
TEI_TYPES = {400: "Validation", 403: "Validation", 429: "Overloaded",
             404: "Validation", 405: "Validation", 413: "Validation", 415: "Validation",
             422: "Validation", 502: "Backend", 503: "Unhealthy"}


class RequestError(Exception):
    """A request the gateway answers itself: a status, a message and, for OpenAI's shape, a code."""

    def __init__(self, status: int, message: str, code: str | None = None, allow: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.allow = status, message, code, allow


def error_body(status: int, message: str, openai: bool, code: str | None = None) -> bytes:
    """OpenAI's nested shape on /v1 and /v2, TEI's flat one on the native routes."""
    if openai:
        payload: dict[str, Any] = {"error": {"message": message, "type": OPENAI_TYPES.get(status, "api_error"),
                                             "code": code or status}}
    else:
        payload = {"error": message, "error_type": TEI_TYPES.get(status, "Backend")}
    return json.dumps(payload, ensure_ascii=False).encode()


def tei_body(payload: Any) -> bytes:
    """A body for TEI, never larger than the client's: raw UTF-8 (ensure_ascii doubles CJK, triples
    emoji) and no spaces between tokens."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def reshape_tei_error(status: int, raw: bytes) -> bytes:
    """A TEI error met on a translated (Cohere) route, in OpenAI's shape with TEI's message."""
    try:
        tei = json.loads(raw)
        message, kind = str(tei.get("error", tei.get("message"))), tei.get("error_type", tei.get("type"))
    except (ValueError, AttributeError, RecursionError):
        message, kind = raw.decode("utf-8", "replace"), None
    if not isinstance(kind, str) or not kind:  # OpenAI's `type` is a string, whatever the upstream sent
        kind = OPENAI_TYPES.get(status, "api_error")
    return json.dumps({"error": {"message": message, "type": kind, "code": status}}).encode()


def is_openai_error(raw: bytes) -> bool:
    """Whether ``raw`` is already OpenAI's nested `{"error": {"message": …}}`."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return False
    return isinstance(body, dict) and isinstance(body.get("error"), dict) and "message" in body["error"]


def unknown_model(asked: str, choices: Sequence[ModelRoute], route: str) -> RequestError:
    names = ", ".join(name for m in choices for name in m.names) or "none"
    return RequestError(404, f"The model `{asked}` does not exist or is not served on {route}. "
                             f"Available: {names}", "model_not_found")


def model_entry(model: ModelRoute, asked: str, created: int) -> dict[str, Any]:
    """One `/v1/models` entry: OpenAI's fields plus `kind` (and the other names it answers to)."""
    owner = model.name.split("/", 1)[0] if "/" in model.name else "embed-launcher"
    return {"id": asked, "object": "model", "created": created, "owned_by": owner, "kind": model.kind,
            "aliases": list(model.aliases)}


def model_list(models: Sequence[ModelRoute], created: int) -> dict[str, Any]:
    return {"object": "list", "data": [model_entry(m, m.name, created) for m in models]}


# Cohere / Jina rerank ---------------------------------------------------------------------------

@dataclass(frozen=True)
class CohereRerank:
    """A Cohere/Jina rerank request, checked: what TEI needs and what the answer needs."""

    model: str | None
    query: str
    documents: tuple[Any, ...]
    texts: tuple[str, ...]
    top_n: int | None
    return_documents: bool

    def tei_body(self) -> dict[str, Any]:
        # Cohere truncates long documents silently; so do we (TEI's default would depend on the server).
        return {"query": self.query, "texts": list(self.texts), "raw_scores": False, "return_text": False,
                "truncate": True}


def parse_cohere(body: Any) -> CohereRerank:
    """Read `{"model","query","documents","top_n","return_documents","rank_fields"}` (Jina's too)."""
    if not isinstance(body, dict):
        raise RequestError(422, "the body must be a JSON object")
    query, documents = body.get("query"), body.get("documents", body.get("texts"))
    if isinstance(query, dict):  # Jina accepts {"text": ...} for the query as well
        query = query.get("text")
    if not isinstance(query, str):
        raise RequestError(422, "`query` must be a string")
    if not isinstance(documents, list) or not documents:
        raise RequestError(422, "`documents` must be a non-empty list of strings or {\"text\": ...} objects")
    texts = tuple(_document_text(doc, body.get("rank_fields"), i) for i, doc in enumerate(documents))
    top_n, model = body.get("top_n"), body.get("model")
    if top_n is not None and (not isinstance(top_n, int) or isinstance(top_n, bool) or top_n < 1):
        raise RequestError(422, "`top_n` must be a positive integer")
    if model is not None and not isinstance(model, str):
        raise RequestError(422, "`model` must be a string")
    return CohereRerank(model or None, query, tuple(documents), texts, top_n, bool(body.get("return_documents")))


def _document_text(doc: Any, rank_fields: Any, i: int) -> str:
    if isinstance(doc, str):
        return doc
    if isinstance(doc, dict) and isinstance(rank_fields, list) and rank_fields:
        return "\n".join(f"{f}: {doc[f]}" for f in rank_fields if isinstance(f, str) and f in doc)
    if isinstance(doc, dict) and isinstance(doc.get("text"), str):
        return str(doc["text"])
    raise RequestError(422, f"`documents[{i}]` must be a string or an object with a string `text`")


def cohere_answer(request: CohereRerank, tei_results: list[dict[str, Any]], asked: str, tokens: int,
                  version: str) -> dict[str, Any]:
    """TEI's `[{"index","score"}]` (sorted) as Cohere's and Jina's answer, cut to `top_n`."""
    ranked = sorted(tei_results, key=lambda r: r["score"], reverse=True)[: request.top_n or len(tei_results)]
    results = []
    for item in ranked:
        result: dict[str, Any] = {"index": item["index"], "relevance_score": item["score"]}
        if request.return_documents:
            doc = request.documents[item["index"]]
            result["document"] = doc if isinstance(doc, dict) else {"text": doc}
        results.append(result)
    return {"id": str(uuid.uuid4()), "model": asked, "results": results,
            "usage": {"total_tokens": tokens, "prompt_tokens": tokens},
            "meta": {"api_version": {"version": version}, "billed_units": {"search_units": 1}}}
