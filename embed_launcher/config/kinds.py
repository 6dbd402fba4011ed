"""Value kinds for configuration: a parser (None = invalid) and the rule the error message quotes (pure)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
MAX_SECONDS = 365 * 24 * 3600.0


@dataclass(frozen=True)
class Kind(Generic[T]):
    """How one kind of value is parsed, and what the error message says is allowed."""

    parse: Callable[[str], T | None]
    rule: str


_BOOLEANS = {"true": True, "1": True, "yes": True, "on": True,
             "false": False, "0": False, "no": False, "off": False}
_DIGITS = re.compile(r"[0-9]{1,18}")  # longer is absurd here, and int() of 4300+ digits raises
_SECONDS = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*s?", re.IGNORECASE)
_NAME_PART = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"
_MODEL_ID = re.compile(rf"(?:{_NAME_PART}/)?{_NAME_PART}")
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*\.?")


def _count(raw: str) -> int | None:
    return int(raw) if _DIGITS.fullmatch(raw) and int(raw) >= 1 else None


def _port(raw: str) -> int | None:
    return int(raw) if _DIGITS.fullmatch(raw) and 1 <= int(raw) <= 65535 else None


def _seconds(raw: str) -> float | None:
    match = _SECONDS.fullmatch(raw)
    # Bounded so that waits stay within what threading and selectors accept.
    return float(match.group(1)) if match and 0 < float(match.group(1)) <= MAX_SECONDS else None


def _ip(raw: str) -> str | None:
    bare = raw[1:-1] if raw.startswith("[") and raw.endswith("]") else raw
    if "%" in bare:  # scoped IPv6: Python parses it, TEI does not
        return None
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        return None


def _host(raw: str) -> str | None:
    return "127.0.0.1" if raw.lower() == "localhost" else _ip(raw)


def _server_addr(raw: str) -> str | None:
    if (ip := _ip(raw)) is not None:
        return ip
    numeric = re.fullmatch(r"[0-9.]+", raw)  # looks like an IPv4 address but is not one
    return raw if _HOSTNAME.fullmatch(raw) and not numeric else None


def _model(raw: str) -> str | None:
    return raw if _MODEL_ID.fullmatch(raw) and ".." not in raw and "--" not in raw else None


def _models(raw: str) -> tuple[str, ...] | None:
    ids = tuple(part.strip() for part in raw.split(","))
    if not ids or any(_model(i) is None for i in ids) or len(set(ids)) != len(ids):
        return None
    return ids


def _replicas(raw: str) -> int | None:
    """A count, or "auto" as 0 (one replica per GPU; 1 on CPU)."""
    return 0 if raw.lower() == "auto" else _count(raw)


_GPU_ID = re.compile(r"[0-9]{1,3}|(?:GPU|MIG)-[A-Za-z0-9/-]{1,80}")


def _gpus(raw: str) -> tuple[str, ...] | None:
    """GPU ids as CUDA_VISIBLE_DEVICES spells them (indices or UUIDs), comma-separated, each once."""
    ids = tuple(part.strip() for part in raw.split(","))
    if not ids or not all(_GPU_ID.fullmatch(i) for i in ids) or len(set(ids)) != len(ids):
        return None
    return ids


def _choice(*allowed: str, **aliases: str) -> Kind[str]:
    table = {a: a for a in allowed} | aliases
    return Kind(lambda raw: table.get(raw.lower()), "one of " + ", ".join(allowed))


def _origins(raw: str) -> tuple[str, ...] | None:
    origins = tuple(o.strip() for o in raw.split(",") if o.strip())
    return origins if origins and not any(re.search(r"\s", o) for o in origins) else None


def _one(parse: Callable[[str], object | None]) -> Callable[[str], tuple[str, ...] | None]:
    """Adapt a scalar parser to a TEI argument: one value, rendered as TEI spells it."""

    def to_args(raw: str) -> tuple[str, ...] | None:
        value = parse(raw)
        if value is None:
            return None
        return (str(value).lower() if isinstance(value, bool) else str(value),)

    return to_args


BOOL = Kind(lambda raw: _BOOLEANS.get(raw.lower()), "true or false (also 1/0, yes/no, on/off)")
PORT = Kind(_port, "an integer between 1 and 65535")
COUNT = Kind(_count, "a whole number of at least 1")
SECONDS = Kind(_seconds, "a positive number of seconds (at most a year), e.g. 10 or 0.5s")
HOST = Kind(_host, "an IP address such as 0.0.0.0, 127.0.0.1 or :: (or localhost), not a name")
SERVER_ADDR = Kind(_server_addr, "a host name or IP address without scheme, port or spaces")
MODEL = Kind(_model, "a Hugging Face model id like BAAI/bge-small-en-v1.5 (org/name, no spaces)")
MODELS = Kind(
    _models,
    "one or more Hugging Face model ids, comma-separated and each once, like BAAI/bge-small-en-v1.5"
    " or BAAI/bge-small-en-v1.5,BAAI/bge-m3 (the first is the default)",
)
TEXT = Kind(lambda raw: raw, "any text")
WORD = Kind(lambda raw: None if re.search(r"\s", raw) else raw, "a value without spaces")
BACKEND = _choice("auto", "onnx", "candle")
TOKEN_INPUT = _choice("reject", "decode", "passthrough")
LOG_FORMAT = _choice("text", "json")
PERSISTENCE = Kind(
    lambda raw: "auto" if raw.lower() == "auto" else _BOOLEANS.get(raw.lower()),
    "auto, or true or false (also 1/0, yes/no, on/off)",
)
AUTO_BOOL = PERSISTENCE  # "auto" or a boolean
ARG_COUNT = Kind(_one(_count), COUNT.rule)
ARG_BOOL = Kind(_one(BOOL.parse), BOOL.rule)
DTYPE = _choice("float16", "float32", "bfloat16")
ARG_DTYPE = Kind(_one(DTYPE.parse), DTYPE.rule)
POOLING = _choice("cls", "mean", "splade", "last-token", last_token="last-token")
ARG_POOLING = Kind(_one(POOLING.parse), POOLING.rule)
ARG_ORIGINS = Kind(_origins, "a comma-separated list of origins, e.g. https://app.example.com")
ARG_TEXT = Kind(_one(TEXT.parse), TEXT.rule)
REPLICAS = Kind(_replicas, "auto or a whole number of at least 1")
GPUS = Kind(_gpus, "a comma-separated list of GPU indices or UUIDs, each once, e.g. 0,2")
BALANCE = _choice("least-inputs", "round-robin")
