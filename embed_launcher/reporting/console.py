"""The one output sink: plain lines for docker logs and journald, a little colour on a terminal."""

from __future__ import annotations

import re
import sys
import threading
from typing import ClassVar, TextIO

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
MASK = "***"


def strip_ansi(text: str) -> str:
    """Remove terminal colour codes (TEI emits them even into pipes)."""
    return ANSI_ESCAPE.sub("", text)


def mask_secrets(text: str, secrets: tuple[str, ...]) -> str:
    """Replace every occurrence of every secret, longest first so no fragment survives."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, MASK)
    return text


class Console:
    """Writes whole lines, one event per line, flushed at once; safe to call from any thread.

    Launcher messages go out verbatim (users grep them); a child's lines get its name as a
    prefix: ``[embed] ...``. Errors and warnings go to stderr. On a terminal the prefixes and
    errors are coloured; off a terminal nothing but the text is written.
    """

    COLOURS: ClassVar[dict[str, str]] = {
        "embed": "\x1b[36m",
        "rerank": "\x1b[35m",
        "error": "\x1b[31m",
        "warn": "\x1b[33m",
    }
    RESET = "\x1b[0m"

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None, *, colour: bool | None = None) -> None:
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self.colour = self._isatty(self.out) if colour is None else colour
        self._lock = threading.Lock()

    @staticmethod
    def _isatty(stream: TextIO) -> bool:
        try:
            return stream.isatty()
        except (AttributeError, ValueError):
            return False

    def _paint(self, key: str, text: str) -> str:
        return f"{self.COLOURS[key]}{text}{self.RESET}" if self.colour else text

    def _write(self, stream: TextIO, text: str) -> None:
        with self._lock:
            try:
                stream.write(text + "\n")
                stream.flush()
            except (BrokenPipeError, ValueError):
                pass  # the reader went away (e.g. `| head`); losing a log line beats dying

    def info(self, text: str = "") -> None:
        """A launcher message, verbatim."""
        for line in text.split("\n"):
            self._write(self.out, line)

    def lines(self, lines: list[str] | tuple[str, ...]) -> None:
        """Several launcher messages, kept together."""
        self.info("\n".join(lines))

    def warn(self, text: str) -> None:
        """A warning that does not stop anything."""
        self._write(self.err, self._paint("warn", text))

    def error(self, text: str) -> None:
        """An error, as the user will read it: one actionable message."""
        self._write(self.err, self._paint("error", text))

    def child(self, name: str, text: str) -> None:
        """One line relayed from a child, already masked."""
        prefix = self._paint(name, f"[{name}]") if name in self.COLOURS else f"[{name}]"
        self._write(self.out, f"{prefix} {text}")
