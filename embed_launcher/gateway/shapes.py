"""The gateway's own answers, as pure functions: error bodies in OpenAI's and TEI's shapes, TEI request bodies.

Each API's requests and answers live in gateway/dialects/ (which import from here, never the reverse)."""

from __future__ import annotations

import json
from collections.abc import Sequence
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
