"""Batches larger than a model's limit: cut the request into chunks, join the answers in order (pure)."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Split:
    """Where a route's batch lives in its body, how its answers join, and what else counts against the limit."""

    field: str  # a key, or "outer.inner"
    merge: str  # "concat" (JSON arrays joined), "openai" (data renumbered, usage summed), "rerank"
    extra: int = 0  # items TEI counts besides the batch (similarity counts the source sentence)


SPLITS = {
    "/embed": Split("inputs", "concat"),
    "/embed_all": Split("inputs", "concat"),
    "/embed_sparse": Split("inputs", "concat"),
    "/predict": Split("inputs", "concat"),
    "/tokenize": Split("inputs", "concat"),
    "/decode": Split("ids", "concat"),
    "/similarity": Split("inputs.sentences", "concat", extra=1),
    "/rerank": Split("texts", "rerank"),
    "/v1/embeddings": Split("input", "openai"),
    "/embeddings": Split("input", "openai"),
}


def batch_of(body: Any, split: Split, route: str) -> list[Any] | None:
    """The batch in ``body``, or None when the body holds a single input (or is not ours to judge)."""
    holder, key = _holder(body, split.field)
    items = holder.get(key) if holder is not None else None
    if not isinstance(items, list) or not items:
        return None
    if split.field in ("inputs", "input") and route != "/tokenize" and all(isinstance(v, int) for v in items):
        return None  # [1, 2, 3] is one token-id input, not a batch
    if route == "/predict" and not all(isinstance(v, list) for v in items):
        return None  # ["a", "b"] is one pair
    if route == "/decode" and not all(isinstance(v, list) for v in items):
        return None
    return items


def chunk_bodies(body: Any, split: Split, route: str, limit: int) -> list[dict[str, Any]] | None:
    """``body`` cut so every chunk fits ``limit``; None when it fits already."""
    items = batch_of(body, split, route)
    size = max(limit - split.extra, 1)
    if items is None or len(items) + split.extra <= limit:
        return None
    chunks = []
    for start in range(0, len(items), size):
        chunk = json.loads(json.dumps(body)) if "." in split.field else dict(body)
        holder, key = _holder(chunk, split.field)
        assert holder is not None
        holder[key] = items[start : start + size]
        chunks.append(chunk)
    return chunks


def _holder(body: Any, field: str) -> tuple[dict[str, Any] | None, str]:
    *outer, key = field.split(".")
    for name in outer:
        body = body.get(name) if isinstance(body, dict) else None
    return (body if isinstance(body, dict) else None), key


def merge_concat(answers: list[bytes]) -> bytes:
    """JSON arrays joined without parsing their contents (TEI's vectors can be megabytes)."""
    inner = [a.strip()[1:-1].strip() for a in answers]
    return b"[" + b",".join(part for part in inner if part) + b"]"


def merge_openai(answers: list[bytes], sizes: list[int], model: str) -> bytes:
    """OpenAI embedding lists joined without parsing the vectors: the `data` arrays' bytes spliced,
    `index` renumbered in order, usage summed, `model` set. An answer not in TEI's shape is parsed
    instead (correct, only slower)."""
    parts, usage, start = [], {"prompt_tokens": 0, "total_tokens": 0}, 0
    for raw, size in zip(answers, sizes, strict=True):
        items, rest = _openai_parts(raw, size)
        parts.append(INDEX.sub(_renumber(start), items))
        start += size
        for key in usage:
            value = rest.get("usage", {}).get(key, 0)
            usage[key] += value if isinstance(value, int) else 0
    tail = json.dumps({"model": model, "usage": usage}, ensure_ascii=False, separators=(",", ":"))
    return b'{"object":"list","data":[' + b",".join(p for p in parts if p) + b"]," + tail[1:].encode()


INDEX = re.compile(rb'"index"\s*:\s*\d+')


def _renumber(start: int) -> Callable[[re.Match[bytes]], bytes]:
    counter = itertools.count(start)
    return lambda _match: b'"index":%d' % next(counter)


def _openai_parts(raw: bytes, size: int) -> tuple[bytes, dict[str, Any]]:
    """The `data` array's inner bytes, and the rest of the answer parsed (small without its data).

    TEI writes `{"object":"list","data":[…],"model":…,"usage":{…}}`; each item holds one `"index"`
    and no other (vectors are numbers or base64, neither can hold a quote). Anything else: parsed.
    """
    opening = raw.find(b'"data"')
    bracket = raw.find(b"[", opening)
    closing = raw.rfind(b"]", 0, raw.rfind(b'"model"'))
    if min(opening, bracket, closing) >= 0 and raw[opening + 6:bracket].strip() == b":":
        items = raw[bracket + 1:closing]
        try:
            rest = json.loads(raw[:bracket] + b"[]" + raw[closing + 1:])
        except ValueError:
            rest = None
        if isinstance(rest, dict) and rest.get("data") == [] and len(INDEX.findall(items)) == size:
            return items.strip(), rest
    part = json.loads(raw)
    items = b",".join(json.dumps(item, separators=(",", ":")).encode() for item in part["data"])
    return items, part


def merge_rerank(answers: list[bytes], chunk_size: int) -> list[dict[str, Any]]:
    """TEI rerank results joined: indexes shifted to the whole batch, sorted by score again."""
    results = []
    for number, raw in enumerate(answers):
        for item in json.loads(raw):
            results.append({**item, "index": item["index"] + number * chunk_size})
    return sorted(results, key=lambda r: r["score"], reverse=True)
