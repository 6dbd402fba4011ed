"""Ollama's dialect: /api/embed, /api/embeddings, /api/tags, /api/show, /api/version (pure).

Ollama's errors are `{"error": "<message>"}`; the gateway's TEI-shaped errors are that plus `error_type`,
which Ollama's clients ignore.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import Any

from embed_launcher.gateway.config import ModelRoute
from embed_launcher.gateway.dialects import EmbedCall
from embed_launcher.gateway.shapes import RequestError

# The Ollama version the gateway answers /api/version with: the API it follows (embed with `dimensions`).
VERSION = "0.12.0"


def model_name(asked: Any) -> str | None:
    """The model an Ollama client names, its `:latest` tag dropped (Ollama's clients add it)."""
    if asked is None or asked == "":
        return None
    if not isinstance(asked, str):
        raise RequestError(400, "`model` must be a string")
    return asked.removesuffix(":latest")


def parse_embed(body: Any) -> EmbedCall:
    """`/api/embed`: `{"model", "input": text or [texts], "truncate", "dimensions"}`."""
    if not isinstance(body, dict):
        raise RequestError(400, "the body must be a JSON object")
    value = body.get("input")
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise RequestError(400, "`input` must be a string or a non-empty list of strings")
    truncate, dimensions = body.get("truncate", True), body.get("dimensions")
    if not isinstance(truncate, bool):
        raise RequestError(400, "`truncate` must be true or false")
    if dimensions is not None and (not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1):
        raise RequestError(400, "`dimensions` must be a positive integer")
    return EmbedCall(model_name(body.get("model")), tuple(texts), truncate, dimensions=dimensions)


def parse_embeddings(body: Any) -> EmbedCall:
    """`/api/embeddings` (the legacy one): `{"model", "prompt": text}`."""
    if not isinstance(body, dict):
        raise RequestError(400, "the body must be a JSON object")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise RequestError(400, "`prompt` must be a non-empty string")
    return EmbedCall(model_name(body.get("model")), (prompt,), True)


def embed_answer(asked: str, vectors: list[list[float]], tokens: int, took_ns: int) -> dict[str, Any]:
    return {"model": asked, "embeddings": vectors, "total_duration": took_ns, "load_duration": 0,
            "prompt_eval_count": tokens}


def embeddings_answer(vectors: list[list[float]]) -> dict[str, Any]:
    return {"embedding": vectors[0]}


def _details(model: ModelRoute) -> dict[str, Any]:
    family = model.name.rsplit("/", 1)[-1].split("-", 1)[0].lower()
    return {"parent_model": "", "format": "safetensors", "family": family, "families": [family],
            "parameter_size": "", "quantization_level": ""}


def _stamp(created: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))


def tags(models: Sequence[ModelRoute], created: int) -> dict[str, Any]:
    """`/api/tags`: the embedding models (Ollama serves no reranker or sparse model), each by every name."""
    entries = []
    for model in models:
        if model.kind != "embed":
            continue
        for name in model.names:
            digest = hashlib.sha256(model.name.encode()).hexdigest()
            entries.append({"name": name, "model": name, "modified_at": _stamp(created), "size": 0,
                            "digest": digest, "details": _details(model)})
    return {"models": entries}


def show(model: ModelRoute, created: int, facts: dict[str, Any]) -> dict[str, Any]:
    """`/api/show`: Ollama's description of one model, with what the server told of it."""
    info: dict[str, Any] = {"general.architecture": _details(model)["family"], "general.basename": model.name}
    if "dimensions" in facts:
        info["embedding_length"] = facts["dimensions"]
    if "max_input_length" in facts:
        info["context_length"] = facts["max_input_length"]
    return {"modelfile": "", "parameters": "", "template": "", "details": _details(model), "model_info": info,
            "capabilities": ["embedding"], "modified_at": _stamp(created)}


def version() -> dict[str, str]:
    return {"version": VERSION}
