"""Log sink of the TEI stand-in: tracing-subscriber 0.3.19 text (ANSI) and JSON lines, EnvFilter from LOG_LEVEL."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

LEVELS = {"off": 0, "error": 1, "warn": 2, "info": 3, "debug": 4, "trace": 5}
LEVEL_TEXT = {1: "ERROR", 2: " WARN", 3: " INFO", 4: "DEBUG", 5: "TRACE"}
LEVEL_COLOUR = {1: "31", 2: "33", 3: "32", 4: "34", 5: "35"}
ERROR, WARN, INFO = 1, 2, 3
_LEVEL = r"(?i:trace|debug|info|warn|error|off|[0-5])"
_DIRECTIVE = re.compile(rf"^(?:(?P<target>[\w:-]+)|(?P<span>\[[^\]]*\])){{1,2}}(?:=(?P<level>{_LEVEL})?)?$")
DIM, BOLD, RESET = "\x1b[2m", "\x1b[1m", "\x1b[0m"


def _level(word: str) -> int:
    return int(word) if word.isdigit() else LEVELS[word.lower()]


@dataclass(frozen=True)
class EnvFilter:
    """The subset of tracing's EnvFilter TEI users meet: global levels and `target[=level]` directives."""

    default: int | None = INFO
    targets: tuple[tuple[str, int], ...] = ()

    @classmethod
    def parse(cls, spec: str | None) -> EnvFilter:
        """`LOG_LEVEL` unset or invalid means `info`; an empty value enables nothing."""
        if spec is None:
            return cls()
        default: int | None = None
        targets: list[tuple[str, int]] = []
        for part in filter(None, spec.split(",")):
            if re.fullmatch(_LEVEL, part):
                default = _level(part)
                continue
            match = _DIRECTIVE.match(part)
            if match is None:
                return cls()
            level = _level(match["level"]) if match["level"] else 5
            targets.append((match["target"] or "\0span-only", level))
        targets.sort(key=lambda t: -len(t[0]))
        return cls(default, tuple(targets))

    def enabled(self, level: int, target: str) -> bool:
        for prefix, max_level in self.targets:
            if target.startswith(prefix):
                return level <= max_level
        return self.default is not None and level <= self.default


@dataclass(frozen=True)
class Span:
    """A tracing span around an event: its name and its recorded fields, already formatted."""

    name: str
    fields: Sequence[tuple[str, str]] = field(default_factory=tuple)


def rfc3339_micros(now: float) -> str:
    """tracing-subscriber's SystemTime format: UTC, microseconds, `Z`."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int((now % 1) * 1_000_000):06d}Z"


def rust_duration(seconds: float) -> str:
    """Rust's `{:?}` of a Duration: `4.82s`, `720.5ms`, `12.3µs`, `800ns` (trailing zeros trimmed)."""
    nanos = max(round(seconds * 1e9), 0)
    for unit, scale in (("s", 10**9), ("ms", 10**6), ("µs", 10**3)):
        if nanos >= scale:
            whole, frac = divmod(nanos, scale)
            digits = str(frac).rjust(len(str(scale)) - 1, "0").rstrip("0")
            return f"{whole}.{digits}{unit}" if digits else f"{whole}{unit}"
    return f"{nanos}ns"


def fd_sink(fd: int) -> Callable[[bytes], None]:
    """Write straight to a file descriptor, looping over partial writes (no Python buffering to lose)."""
    def sink(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    return sink


class Logger:
    """Writes one line per event to a binary stream, flushing each line as Rust's stdout does."""

    def __init__(self, sink: Callable[[bytes], None], env: Mapping[str, str], json_output: bool,
                 disable_spans: bool) -> None:
        self.sink = sink
        self.json_output = json_output
        self.spans = not disable_spans
        self.ansi = not env.get("NO_COLOR")
        self.filter = EnvFilter.parse(env.get("LOG_LEVEL"))
        self.lock = threading.Lock()

    def log(self, level: int, target: str, file: str, line: int, message: str, span: Span | None = None) -> None:
        if self.filter.enabled(level, target):
            self.write(self.format(level, target, file, line, message, span) + "\n")

    def format(self, level: int, target: str, file: str, line: int, message: str, span: Span | None = None) -> str:
        now = time.time()
        if self.json_output:
            return self._json(now, level, target, file, line, message, span)
        return self._text(now, level, target, file, line, message, span)

    def write(self, text: str) -> None:
        """Write raw text; a closed or broken pipe is ignored, as tracing-subscriber ignores write errors."""
        with self.lock:
            try:
                self.sink(text.encode("utf-8"))
            except OSError:
                pass

    def _paint(self, style: str, text: str) -> str:
        return f"{style}{text}{RESET}" if self.ansi else text

    def _text(self, now: float, level: int, target: str, file: str, line: int, message: str,
              span: Span | None) -> str:
        stamp = self._paint(DIM, rfc3339_micros(now))
        level_text = self._paint(f"\x1b[{LEVEL_COLOUR[level]}m", LEVEL_TEXT[level])
        scope = ""
        if span is not None:
            scope = self._paint(BOLD, span.name)
            if span.fields:
                fields = " ".join(f"{k}={v}" for k, v in span.fields)
                scope += self._paint(BOLD, "{") + fields + self._paint(BOLD, "}")
            scope += self._paint(DIM, ":") + " "
        where = self._paint(DIM, target) + self._paint(DIM, ":") + " " + self._paint(DIM, file)
        where += self._paint(DIM, ":") + self._paint(DIM, f"{line}:")
        return f"{stamp} {level_text} {scope}{where} {message}"

    def _json(self, now: float, level: int, target: str, file: str, line: int, message: str,
              span: Span | None) -> str:
        record: dict[str, object] = {"timestamp": rfc3339_micros(now), "level": LEVEL_TEXT[level].strip(),
                                     "message": message, "target": target, "filename": file,
                                     "line_number": line}
        if span is not None and self.spans:
            fields: dict[str, object] = {k: json.loads(v) if v.startswith('"') else v for k, v in span.fields}
            fields["name"] = span.name
            record["span"] = fields
            record["spans"] = [fields]
        return json.dumps(record, ensure_ascii=False, separators=(",", ":"))
