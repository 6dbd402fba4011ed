"""Jina's rerank dialect: Cohere's shape, with a query and documents that may be `{"text": ...}` objects (pure).

Jina posts to the same `/v1/rerank` as Cohere; the two differ only in what a query or a document may be,
which these helpers read for cohere.parse_rerank.
"""

from __future__ import annotations

from typing import Any

from embed_launcher.gateway.shapes import RequestError


def query_text(query: Any) -> Any:
    """Jina accepts `{"text": ...}` for the query as well as a string."""
    return query.get("text") if isinstance(query, dict) else query


def document_text(doc: Any, rank_fields: Any, i: int) -> str:
    """A document's text: a string, Cohere's `rank_fields` of an object, or Jina's `{"text": ...}`."""
    if isinstance(doc, str):
        return doc
    if isinstance(doc, dict) and isinstance(rank_fields, list) and rank_fields:
        return "\n".join(f"{f}: {doc[f]}" for f in rank_fields if isinstance(f, str) and f in doc)
    if isinstance(doc, dict) and isinstance(doc.get("text"), str):
        return str(doc["text"])
    raise RequestError(422, f"`documents[{i}]` must be a string or an object with a string `text`")
