"""A request's id: the client's `X-Request-Id` when sane, else its W3C `traceparent`'s trace-id, else a new one (pure).

The id is echoed in every answer, sent to TEI with the request, and named in the access log and in
every error line about the request, so one grep follows a request from the client to TEI.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

MAX_ID_CHARS = 128
HEADER = "X-Request-Id"
TRACEPARENT = "traceparent"
# Visible ASCII only: no spaces (the text log's `rid=<id>` stays one word), no control characters
# (no forged log lines, no header injection).
_SANE = re.compile(rf"[!-~]{{1,{MAX_ID_CHARS}}}")
# version-trace_id-parent_id-flags, lowercase hex (W3C Trace Context, level 1, §3.2). A later version may
# append fields after another dash; version ff is invalid, and so are all-zero ids.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ZERO_TRACE, _ZERO_PARENT = "0" * 32, "0" * 16


def sane_id(value: str | None) -> str | None:
    """The client's id, or None when it is absent, empty, longer than 128 characters or not visible ASCII."""
    if value is None or _SANE.fullmatch(value) is None:
        return None
    return value


def trace_id(traceparent: str | None) -> str | None:
    """The trace-id of a valid `traceparent`, or None."""
    if traceparent is None:
        return None
    match = _TRACEPARENT.fullmatch(traceparent.strip())
    if match is None:
        return None
    version, trace, parent, _flags, more = match.groups()
    if version == "ff" or (version == "00" and more) or trace == _ZERO_TRACE or parent == _ZERO_PARENT:
        return None
    return trace


def new_id() -> str:
    """A fresh id: 32 lowercase hex digits (a uuid4), the shape of a trace-id."""
    return uuid.uuid4().hex


def choose(x_request_id: str | None, traceparent: str | None, new: Callable[[], str] = new_id) -> str:
    """The request's id, by the rules above."""
    return sane_id(x_request_id) or trace_id(traceparent) or new()
