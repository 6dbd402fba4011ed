"""The one output sink: plain lines for docker logs and journald, a little colour on a terminal."""

from __future__ import annotations

import json
import re
import sys
import threading
from typing import Any, ClassVar, TextIO

from embed_launcher.reporting.logline import json_line, json_object

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
MASK = "***"


def strip_ansi(text: str) -> str:
    """Remove terminal colour codes (TEI emits them even into pipes)."""
    return ANSI_ESCAPE.sub("", text)


def mask_secrets(text: str, secrets: tuple[str, ...]) -> str:
    """Replace every occurrence of every secret, longest first so no fragment survives; also as it reads
    inside a JSON string (TEI's --json-output escapes a key's quotes and backslashes)."""
    forms = {form for secret in secrets if secret for form in (secret, json.dumps(secret)[1:-1])}
    for secret in sorted(forms, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


class Console:
    """Writes whole lines, one event per line, flushed at once; safe to call from any thread.

    Launcher messages go out verbatim (users grep them); a child's lines get its name as a
    prefix: ``[embed] ...``. Errors and warnings go to stderr. On a terminal the prefixes and
    errors are coloured; off a terminal nothing but the text is written.

    ``json`` (EMBED_LOG_FORMAT=json): every line is one JSON object (reporting/logline), never
    coloured; a child's line that already is one (TEI's --json-output, the gateway's) goes out as it
    is, any other is wrapped with the child's name as its logger.
    """

    COLOURS: ClassVar[dict[str, str]] = {
        "embed": "\x1b[36m",
        "rerank": "\x1b[35m",
        "error": "\x1b[31m",
        "warn": "\x1b[33m",
    }
    RESET = "\x1b[0m"

    LOGGER = "embed-launcher"  # the `logger` of the launcher's own JSON lines

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None, *, colour: bool | None = None,
                 json: bool = False, logger: str = LOGGER) -> None:
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self.colour = self._isatty(self.out) if colour is None else colour
        self.json, self.logger = json, logger
        self._lock = threading.Lock()

    def use_format(self, log_format: str) -> None:
        """Switch to EMBED_LOG_FORMAT (`text` or `json`) once the configuration is read."""
        self.json = log_format == "json"

    @staticmethod
    def _isatty(stream: TextIO) -> bool:
        try:
            return stream.isatty()
        except (AttributeError, ValueError):
            return False

    def _paint(self, key: str, text: str) -> str:
        return f"{self.COLOURS[key]}{text}{self.RESET}" if self.colour and not self.json else text

    def _write(self, stream: TextIO, text: str) -> None:
        with self._lock:
            try:
                stream.write(text + "\n")
                stream.flush()
            except (BrokenPipeError, ValueError):
                pass  # the reader went away (e.g. `| head`); losing a log line beats dying

    def info(self, text: str = "", **fields: Any) -> None:
        """A launcher message, verbatim (in JSON, one object per line of it; blank spacing lines are left out).

        ``fields`` (e.g. the ``model`` and ``replica`` a line is about) go into the JSON line only.
        """
        for line in text.split("\n"):
            if not self.json:
                self._write(self.out, line)
            elif line.strip():
                self._write(self.out, json_line("info", self.logger, line, **fields))

    def lines(self, lines: list[str] | tuple[str, ...]) -> None:
        """Several launcher messages, kept together."""
        self.info("\n".join(lines))

    def warn(self, text: str, **fields: Any) -> None:
        """A warning that does not stop anything."""
        self._write(self.err, json_line("warning", self.logger, text, **fields) if self.json
                    else self._paint("warn", text))

    def error(self, text: str, **fields: Any) -> None:
        """An error, as the user will read it: one actionable message (one JSON object, however many lines)."""
        self._write(self.err, json_line("error", self.logger, text, **fields) if self.json
                    else self._paint("error", text))

    def child(self, name: str, text: str) -> None:
        """One line relayed from a child, already masked."""
        if self.json:
            self._write(self.out, text if json_object(text) is not None else json_line("info", name, text))
            return
        prefix = self._paint(name, f"[{name}]") if name in self.COLOURS else f"[{name}]"
        self._write(self.out, f"{prefix} {text}")
