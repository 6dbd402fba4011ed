"""The gateway's log lines, text or JSON (EMBED_LOG_FORMAT), and what is known of the request being handled.

Every line the gateway prints goes through ``say`` (its own lines) or ``say_about_request`` (an error
about one request: the text line ends with ` rid=<id>`, the JSON line carries `request_id`). The
access log line is ``access_line``. In JSON each is one object (reporting/logline): logger `gateway`
or `gateway.access`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from embed_launcher.gateway.requestid import HEADER, TRACEPARENT, choose
from embed_launcher.reporting.logline import json_line

LOGGER, ACCESS_LOGGER = "gateway", "gateway.access"


@dataclass
class RequestLog:
    """One request's id (and the client's traceparent), and what its handling learnt for the access log:
    the model, the replicas that answered (numbers, as in the launcher's `embed#2`), the inputs sent."""

    id: str
    traceparent: str | None = None
    model: str | None = None
    replicas: list[int] = field(default_factory=list)
    inputs: int = 0

    @classmethod
    def of(cls, headers: Mapping[str, str]) -> RequestLog:
        traceparent = headers.get(TRACEPARENT)
        return cls(choose(headers.get(HEADER), traceparent), traceparent)

    def upstream_headers(self) -> dict[str, str]:
        """What TEI gets besides the gateway's own headers: the id, and the client's traceparent unchanged."""
        headers = {HEADER: self.id}
        if self.traceparent is not None:
            headers[TRACEPARENT] = self.traceparent
        return headers

    def answered_by(self, replica: int, inputs: int | None) -> None:
        if replica not in self.replicas:
            self.replicas.append(replica)
        self.inputs += inputs or 0

    def replica(self) -> int | list[int] | None:
        """One replica's number; a list when the chunks of a split batch went to several; None for none."""
        if not self.replicas:
            return None
        return self.replicas[0] if len(self.replicas) == 1 else sorted(self.replicas)


# The request being handled: set by the dispatcher in the request's task (the chunk senders' tasks
# inherit it), read by the upstream (headers, replicas) and by the lines about the request.
CURRENT: ContextVar[RequestLog | None] = ContextVar("request_log", default=None)


class _Format:
    json = False


FORMAT = _Format()  # one per process, set once from the configuration (configure)


def configure(log_format: str) -> None:
    FORMAT.json = log_format == "json"


def level_of(line: str) -> str:
    """Our lines say what they are in their first word."""
    if line.startswith("Error"):
        return "error"
    if line.startswith("Warning"):
        return "warning"
    return "info"


def _print(line: str) -> None:
    print(line, flush=True, file=sys.stdout)


def say(line: str) -> None:
    """One of the gateway's own lines (start, keys file, workers)."""
    _print(json_line(level_of(line), LOGGER, line) if FORMAT.json else line)


def say_about_request(line: str, log: RequestLog | None = None) -> None:
    """A line about the request being handled (an error, a refusal): it names the request's id."""
    log = log or CURRENT.get()
    if log is None:
        say(line)
    elif FORMAT.json:
        _print(json_line(level_of(line), LOGGER, line, request_id=log.id, model=log.model))
    else:
        _print(f"{line} rid={log.id}")


def access_line(remote: str, method: str, path_qs: str, version: str, status: int, size: int, seconds: float,
                key: str | None, log: RequestLog | None) -> str:
    """The access log's line for one answered request."""
    rid = log.id if log is not None else None
    if not FORMAT.json:
        # rid before key: the line still ends with key=<id>, as scripts that read it expect
        return (f'{remote} "{method} {path_qs} HTTP/{version}" {status} {size} {seconds:.6f}s '
                f'rid={rid or "-"} key={key or "-"}')
    known = log or RequestLog("")
    fields: dict[str, Any] = {  # the pinned keys first, then the text line's other facts
        "model": known.model, "replica": known.replica(), "request_id": rid, "status": status,
        "duration_ms": round(seconds * 1000, 3), "inputs": known.inputs or None,
        "remote": remote, "bytes": size, "key": key}
    return json_line("info", ACCESS_LOGGER, f"{method} {path_qs} HTTP/{version}", **fields)
