"""Deterministic fake model of the TEI stand-in: word tokenizer, hash-seeded f32 vectors, scores, f32 JSON."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import re
import struct
from collections.abc import Sequence

DIMS = 384
CLS_ID, SEP_ID = 101, 102
_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)
_VOCAB: dict[int, str] = {CLS_ID: "[CLS]", SEP_ID: "[SEP]"}


class F32(float):
    """A float that serialises like serde_json does an f32 (shortest round-trip text, via ryu)."""


def f32(value: float) -> F32:
    return F32(struct.unpack("<f", struct.pack("<f", value))[0])


def f32_text(value: float) -> str:
    """ryu's shortest representation of an f32, in ryu's layout (`0.001`, `1e-7`, `12.0`)."""
    if value == 0:
        return "-0.0" if math.copysign(1, value) < 0 else "0.0"
    target = struct.pack("<f", value)
    for precision in range(9):
        mantissa, _, exp = f"{value:.{precision}e}".partition("e")
        if struct.pack("<f", float(f"{mantissa}e{exp}")) == target:
            break
    sign = "-" if mantissa.startswith("-") else ""
    digits = mantissa.lstrip("-").replace(".", "").rstrip("0") or "0"
    point = int(exp) + 1  # decimal point position relative to the digit string
    if 0 < point <= 13:
        whole, frac = (digits + "0" * point)[:point], digits[point:]
        return f"{sign}{whole}.{frac or '0'}"
    if -6 < point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    body = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{sign}{body}e{point - 1}"


def dumps(value: object) -> str:
    """Compact JSON like serde_json: no spaces, non-ASCII kept, f32 values in ryu form."""
    if isinstance(value, F32):
        return f32_text(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{dumps(str(k))}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def word_id(word: str) -> int:
    """A stable token id for a word (1000..30999), remembered so /decode can map it back."""
    token_id = 1000 + int.from_bytes(hashlib.blake2s(word.encode()).digest()[:4], "little") % 30000
    _VOCAB.setdefault(token_id, word)
    return token_id


def tokenize(text: str, add_special: bool = True) -> list[dict[str, object]]:
    """Split into words and punctuation; `[CLS]`/`[SEP]` around them, like a BERT tokenizer's output shape."""
    tokens = [{"id": word_id(m.group().lower()), "text": m.group(), "special": False,
               "start": m.start(), "stop": m.end()} for m in _WORD.finditer(text)]
    if add_special:
        tokens = ([{"id": CLS_ID, "text": "[CLS]", "special": True, "start": None, "stop": None}] + tokens
                  + [{"id": SEP_ID, "text": "[SEP]", "special": True, "start": None, "stop": None}])
    return tokens


def decode(ids: Sequence[int], skip_special: bool = True) -> str:
    words = [_VOCAB.get(i, "[UNK]") for i in ids if not (skip_special and i in (CLS_ID, SEP_ID))]
    return " ".join(words)


def token_ids(item: str | Sequence[int]) -> list[int]:
    """Token ids for one input: a text gets special tokens, a token-id list is used as given."""
    if isinstance(item, str):
        return [int(t["id"]) for t in tokenize(item)]  # type: ignore[call-overload]
    return list(item)


def vector(ids: Sequence[int], normalize: bool, dims: int | None = None) -> list[F32]:
    """A deterministic pseudo-embedding of a token-id sequence, optionally cut to `dims`, L2-normalised."""
    seed = hashlib.sha256(struct.pack(f"<{len(ids)}I", *ids)).digest()
    rng = random.Random(seed)
    values = [f32(rng.gauss(0.0, 1.0) * 0.05) for _ in range(DIMS)][: dims or DIMS]
    if normalize:
        norm = math.sqrt(sum(v * v for v in values)) or 1.0
        values = [f32(v / norm) for v in values]
    return values


def b64_vector(values: Sequence[float]) -> str:
    """OpenAI `encoding_format=base64`: raw little-endian f32 bytes, standard base64 with padding."""
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode("ascii")


def cosine(a: Sequence[float], b: Sequence[float]) -> F32:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)) or 1.0
    return f32(dot / norm)


def relevance_logit(query: str, text: str) -> float:
    """A reranker logit from word overlap, so relevant texts score higher: 8 * jaccard - 4."""
    q = {m.group().lower() for m in _WORD.finditer(query)}
    t = {m.group().lower() for m in _WORD.finditer(text)}
    overlap = len(q & t) / len(q | t) if q | t else 0.0
    return 8.0 * overlap - 4.0


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))
