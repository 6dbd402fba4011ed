"""TEI's native dialect: its flat error shape, and what its answers say that other dialects reuse (pure)."""

from __future__ import annotations

import json
from typing import Any


def error_message(raw: bytes) -> str:
    """The message of a TEI error answer (JSON `error`, or axum's plain text)."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return raw.decode("utf-8", "replace").strip()
    if isinstance(body, dict):
        inner = body.get("error", body.get("message"))
        if isinstance(inner, dict):
            inner = inner.get("message")
        if inner is not None:
            return str(inner)
    return raw.decode("utf-8", "replace").strip()


def is_prompt_rejection(status: int, raw: bytes, prompt_name: str) -> bool:
    """Whether TEI refused the request only for its `prompt_name` (the model has no such prompt):
    TEI 1.9's 422 names the server flag, `default-prompt-name`, and the name asked for."""
    message = error_message(raw)
    return status == 422 and "prompt" in message and f"`{prompt_name}`" in message


def vectors(answers: list[bytes]) -> list[list[float]]:
    """TEI /embed answers (one per chunk, in order) as one list of vectors."""
    out: list[list[float]] = []
    for raw in answers:
        part: Any = json.loads(raw)
        out.extend(part)
    return out
