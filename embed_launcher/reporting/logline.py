"""The structured log line (EMBED_LOG_FORMAT=json) and the message inside a JSON log line (pure).

One JSON object per line. `ts`, `level`, `logger` and `msg` are always there; the request keys
(`model`, `replica`, `request_id`, `status`, `duration_ms`, `inputs`) and any others only when they
have a value: a key that is absent had none (never null), so a line stays short and a filter on a
key selects only the lines that have it.
"""

from __future__ import annotations

import json
import time
from typing import Any

FORMATS = ("text", "json")
LEVELS = ("debug", "info", "warning", "error")
# One encoder for every line: json.dumps builds a new one per call whenever an option is given (a third
# of an access line's cost).
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)


def timestamp(now: float) -> str:
    """RFC 3339 in UTC with milliseconds: `2026-12-06T00:20:31.123Z` (sorts as text, parses everywhere)."""
    millis = int((now % 1) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{millis:03d}Z"


def json_line(level: str, logger: str, msg: str, now: float | None = None, **fields: Any) -> str:
    """One log event as one line of JSON; ``fields`` that are None are left out."""
    record: dict[str, Any] = {"ts": timestamp(time.time() if now is None else now), "level": level,
                              "logger": logger, "msg": msg}
    for key, value in fields.items():
        if value is not None:
            record[key] = value
    return _ENCODER.encode(record)


def json_object(line: str) -> dict[str, Any] | None:
    """The line as a JSON object, or None when it is not one (cheap for the common text line)."""
    text = line.strip()
    if not (text.startswith("{") and text.endswith("}")):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def message_of(line: str) -> str:
    """The message of a log line: TEI's `--json-output` puts it in `message` (flattened, tei-contract §2;
    unflattened tracing JSON in `fields.message`), ours in `msg`; any other line is its own message.

    The launcher matches TEI's lines (Ready, the failure hints) on this, whatever the log format.
    """
    record = json_object(line)
    if record is None:
        return line
    for value in (record.get("message"), (record.get("fields") or {}).get("message")
                  if isinstance(record.get("fields"), dict) else None, record.get("msg")):
        if isinstance(value, str):
            return value
    return line
