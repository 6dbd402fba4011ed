"""Cohere's dialect: rerank (v1, v2, and Jina's) and embed (v1, v2), to and from TEI's (pure).

Embed: `texts` (v1, v2) or `inputs` (v2: `{"content": [{"type": "text", "text": …}]}`), `input_type` as the
model's prompt, `truncate` as TEI's, `output_dimension` as TEI's `dimensions`, and every `embedding_types`
computed from TEI's normalised float vectors:

- float; base64 (the float32 values, little-endian, base64);
- int8 and uint8: scalar quantisation over a fixed range per model, [-r, r] with r = min(1, 8/sqrt(dims))
  (eight standard deviations of a unit vector's component, so hardly anything is clipped; values beyond
  are clipped): int8 = round(v / r * 127) in [-128, 127], uint8 = round((v / r + 1) * 127.5) in [0, 255],
  rounding half up;
- ubinary: one bit per dimension, 1 where v > 0, packed eight to a byte, first dimension in the highest bit
  (numpy's packbits; the last byte padded with zeros); binary: the same bytes minus 128 (as sentence-
  transformers' `quantize_embeddings` and Cohere do).
"""

from __future__ import annotations

import base64
import math
import struct
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from embed_launcher.gateway.dialects import EmbedCall, jina
from embed_launcher.gateway.shapes import RequestError

EMBEDDING_TYPES = ("float", "int8", "uint8", "binary", "ubinary", "base64")
TRUNCATE = {"NONE": (False, "Right"), "START": (True, "Left"), "END": (True, "Right")}
# input_type → the prompt names common models define, tried in order (e5 and arctic: query/passage; nomic:
# search_query/search_document; many: query/document). The models file's `prompts` replaces this per model.
DEFAULT_PROMPTS: dict[str, tuple[str, ...]] = {
    "search_query": ("query", "search_query"),
    "search_document": ("passage", "document", "search_document"),
    "classification": ("classification",),
    "clustering": ("clustering",),
}


# Rerank -----------------------------------------------------------------------------------------

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


def parse_rerank(body: Any) -> CohereRerank:
    """Read `{"model","query","documents","top_n","return_documents","rank_fields"}` (Jina's too)."""
    if not isinstance(body, dict):
        raise RequestError(422, "the body must be a JSON object")
    query, documents = jina.query_text(body.get("query")), body.get("documents", body.get("texts"))
    if not isinstance(query, str):
        raise RequestError(422, "`query` must be a string")
    if not isinstance(documents, list) or not documents:
        raise RequestError(422, "`documents` must be a non-empty list of strings or {\"text\": ...} objects")
    texts = tuple(jina.document_text(doc, body.get("rank_fields"), i) for i, doc in enumerate(documents))
    top_n, model = body.get("top_n"), body.get("model")
    if top_n is not None and (not isinstance(top_n, int) or isinstance(top_n, bool) or top_n < 1):
        raise RequestError(422, "`top_n` must be a positive integer")
    if model is not None and not isinstance(model, str):
        raise RequestError(422, "`model` must be a string")
    return CohereRerank(model or None, query, tuple(documents), texts, top_n, bool(body.get("return_documents")))


def rerank_answer(request: CohereRerank, tei_results: list[dict[str, Any]], asked: str, tokens: int,
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


# Embed ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CohereEmbed:
    """A Cohere embed request, checked: the internal call, the prompt names to try, the answer's types."""

    call: EmbedCall
    input_type: str | None
    types: tuple[str, ...]
    by_type: bool  # v2 always, v1 when `embedding_types` was given; else v1's `embeddings_floats`


def parse_embed(body: Any, version: str) -> CohereEmbed:
    """Read `{"model","texts"|"inputs","input_type","embedding_types","truncate","output_dimension"}`."""
    if not isinstance(body, dict):
        raise RequestError(422, "the body must be a JSON object")
    texts = _texts(body)
    model, input_type = body.get("model"), body.get("input_type")
    if model is not None and not isinstance(model, str):
        raise RequestError(422, "`model` must be a string")
    if input_type is not None and not isinstance(input_type, str):
        raise RequestError(422, "`input_type` must be a string (search_query, search_document, classification, "
                                "clustering)")
    given = body.get("embedding_types")
    types = ("float",) if given is None else given
    if (not isinstance(types, list | tuple) or not types
            or not all(isinstance(t, str) and t in EMBEDDING_TYPES for t in types)):
        raise RequestError(422, f"`embedding_types` must be a non-empty list of {', '.join(EMBEDDING_TYPES)}")
    truncate = body.get("truncate", "END")
    if not isinstance(truncate, str) or truncate not in TRUNCATE:
        raise RequestError(422, "`truncate` must be NONE, START or END")
    dimensions = body.get("output_dimension")
    if dimensions is not None and (not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1):
        raise RequestError(422, "`output_dimension` must be a positive integer")
    cut, direction = TRUNCATE[truncate]
    call = EmbedCall(model or None, texts, cut, direction, dimensions=dimensions)
    return CohereEmbed(call, input_type or None, tuple(dict.fromkeys(types)), version != "1" or given is not None)


def _texts(body: dict[str, Any]) -> tuple[str, ...]:
    texts, inputs = body.get("texts"), body.get("inputs")
    if texts is None and isinstance(inputs, list):
        texts = [_input_text(item, i) for i, item in enumerate(inputs)]
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise RequestError(422, "`texts` must be a non-empty list of strings (or v2's `inputs`: "
                                "[{\"content\": [{\"type\": \"text\", \"text\": ...}]}])")
    return tuple(texts)


def _input_text(item: Any, i: int) -> str:
    """A v2 input's text parts, joined; an image part is refused (the models behind TEI read text)."""
    content = item.get("content") if isinstance(item, dict) else None
    if isinstance(item, str):
        return item
    if isinstance(content, list) and content and all(
            isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
        return "\n".join(str(p["text"]) for p in content)
    raise RequestError(422, f"`inputs[{i}]` must be {{\"content\": [{{\"type\": \"text\", \"text\": ...}}]}} "
                            "(text only: images are not supported)")


def prompt_candidates(input_type: str | None, prompts: Mapping[str, str]) -> tuple[str, ...]:
    """The prompt names to try for ``input_type``: the models file's, else the common ones."""
    if input_type is None:
        return ()
    if prompts:
        return (prompts[input_type],) if input_type in prompts else ()
    return DEFAULT_PROMPTS.get(input_type, ())


def no_prompt_warning(input_type: str, model: str) -> str:
    return (f"input_type `{input_type}`: the model `{model}` has no prompt for it, so the texts were embedded "
            "without one (name its prompt in the models file: prompts = { " f"{input_type} = \"<prompt name>\" }})")


def quantisation_range(dims: int) -> float:
    return min(1.0, 8.0 / math.sqrt(dims)) if dims else 1.0


def int8(vector: Sequence[float]) -> list[int]:
    r, floor = quantisation_range(len(vector)), math.floor  # locals: this runs per dimension, in the event loop
    return [-128 if q < -128 else 127 if q > 127 else q for q in (floor(v / r * 127 + 0.5) for v in vector)]


def uint8(vector: Sequence[float]) -> list[int]:
    r, floor = quantisation_range(len(vector)), math.floor
    return [0 if q < 0 else 255 if q > 255 else q for q in (floor((v / r + 1) * 127.5 + 0.5) for v in vector)]


def ubinary(vector: Sequence[float]) -> list[int]:
    bits = "".join(["1" if v > 0 else "0" for v in vector])
    bits += "0" * (-len(bits) % 8)  # the last byte padded with zeros
    return list(int(bits, 2).to_bytes(len(bits) // 8, "big")) if bits else []


def binary(vector: Sequence[float]) -> list[int]:
    return [b - 128 for b in ubinary(vector)]


def b64(vector: Sequence[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


ENCODERS: dict[str, Callable[[Sequence[float]], Any]] = {
    "float": list, "int8": int8, "uint8": uint8, "binary": binary, "ubinary": ubinary, "base64": b64}


def embed_answer(request: CohereEmbed, vectors: list[list[float]], tokens: int, version: str,
                 warnings: Sequence[str]) -> dict[str, Any]:
    """TEI's float vectors in Cohere's answer: `embeddings_by_type` (each type asked), or v1's floats."""
    meta: dict[str, Any] = {"api_version": {"version": version}, "billed_units": {"input_tokens": tokens}}
    if warnings:
        meta["warnings"] = list(warnings)
    answer: dict[str, Any] = {"id": str(uuid.uuid4()), "texts": list(request.call.texts), "meta": meta}
    if request.by_type:
        answer["embeddings"] = {t: [ENCODERS[t](v) for v in vectors] for t in request.types}
        answer["response_type"] = "embeddings_by_type"
    else:
        answer["embeddings"] = vectors
        answer["response_type"] = "embeddings_floats"
    return answer
