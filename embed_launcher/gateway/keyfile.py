"""The keys file (EMBED_API_KEYS_FILE) as data: TOML in, records out, every problem with its line (pure).

One ``[[keys]]`` table per key::

    [[keys]]
    id = "search-app"                      # shown in logs, never the key
    sha256 = "9f86d08…"                    # hex SHA-256 of the key; the file never holds a key in clear
    scopes = ["embed"]                     # embed, rerank, metrics; default: embed and rerank
    models = ["small"]                     # served names or aliases; default: all
    expires = 2027-01-01T00:00:00Z         # optional, RFC 3339 (a TOML datetime or a string)
    rpm = 600                              # optional, requests per minute (shared by the gateway workers)
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime

SCOPES = ("embed", "rerank", "metrics")
DEFAULT_SCOPES = ("embed", "rerank")
DEFAULT_ID = "default"  # the implicit key: the generated one, EMBED_API_KEY and RERANK_API_KEY
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")
FIELDS = ("id", "sha256", "scopes", "models", "expires", "rpm")
_HEADER = re.compile(r"^\s*\[\[\s*keys\s*\]\]\s*(#.*)?$")
_ANY_HEADER = re.compile(r"^\s*\[")


@dataclass(frozen=True)
class KeyEntry:
    """One key of the file: who it is, what it may use, until when, how often."""

    id: str
    sha256: str  # lowercase hex
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    models: tuple[str, ...] | None = None  # None: every model
    expires: datetime | None = None  # timezone-aware
    rpm: int | None = None
    line: int = 0  # the line of its [[keys]] header (1-based; 0 when not from a file)


class KeyFileError(ValueError):
    """A keys file that cannot be used: the first problem, with its line (the whole file is refused)."""

    def __init__(self, path: str, line: int, problem: str, more: int = 0) -> None:
        self.path, self.line, self.problem, self.more = path, line, problem, more
        where = f"{path} line {line}" if line else path
        extra = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        super().__init__(f"keys file {where}: {problem}{extra}")


def hash_key(key: str) -> str:
    """The hex SHA-256 the file stores for ``key``."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def header_lines(text: str) -> list[int]:
    """The 1-based line of each ``[[keys]]`` header, in order (tomllib keeps no positions)."""
    return [n for n, line in enumerate(text.splitlines(), 1) if _HEADER.match(line)]


def parse_keys(text: str, path: str) -> tuple[KeyEntry, ...]:
    """Every key of the file; raise KeyFileError naming the first problem's line."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"at line (\d+)", str(exc))
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise KeyFileError(path, int(match.group(1)) if match else 0, f"not valid TOML: {message}") from None
    problems: list[tuple[int, str]] = [(0, f"unknown top-level key {k!r} (only [[keys]] tables belong here)")
                                       for k in document if k != "keys"]
    tables = document.get("keys", [])
    if not isinstance(tables, list):
        problems.append((0, "`keys` must be an array of tables: write each key as [[keys]]"))
        tables = []
    lines = header_lines(text)
    entries: list[KeyEntry] = []
    seen: dict[str, int] = {}
    for i, table in enumerate(tables):
        line = lines[i] if i < len(lines) else 0
        entry = _entry(table, line, problems)
        if entry is None:
            continue
        if entry.id in seen:
            problems.append((line, f"id {entry.id!r} is used twice (first at line {seen[entry.id]})"))
        seen.setdefault(entry.id, line)
        entries.append(entry)
    if problems:
        line, problem = problems[0]
        raise KeyFileError(path, line, problem, len(problems) - 1)
    return tuple(entries)


def _entry(table: object, line: int, problems: list[tuple[int, str]]) -> KeyEntry | None:
    if not isinstance(table, dict):
        problems.append((line, "each [[keys]] entry must be a table"))
        return None
    found: list[str] = []
    for key in table:
        if key not in FIELDS:
            found.append(f"unknown field {key!r} (expected {', '.join(FIELDS)})")
    ident, digest = table.get("id"), table.get("sha256")
    if not isinstance(ident, str) or not ID_PATTERN.match(ident):
        found.append("`id` must be a name of letters, digits and . _ @ - (64 at most)")
    elif ident == DEFAULT_ID:
        found.append(f"the id {DEFAULT_ID!r} is reserved for EMBED_API_KEY / RERANK_API_KEY")
    if not isinstance(digest, str) or not HEX64.match(digest.lower()):
        found.append("`sha256` must be the key's SHA-256 as 64 hexadecimal characters"
                     " (embed_manage --addkey writes it; the file never holds a key in clear)")
    scopes = _names(table, "scopes", found)
    if scopes is not None:
        bad = [s for s in scopes if s not in SCOPES]
        if bad or not scopes:
            found.append(f"`scopes` must list some of {', '.join(SCOPES)}" + (f"; not {', '.join(bad)}" if bad else ""))
    models = _names(table, "models", found)
    if models is not None and not models:
        found.append("`models` is empty: leave it out to allow every model")
    expires = _expires(table.get("expires"), found)
    rpm = table.get("rpm")
    if rpm is not None and (not isinstance(rpm, int) or isinstance(rpm, bool) or rpm < 1):
        found.append("`rpm` must be a whole number of requests per minute, at least 1")
    problems.extend((line, p) for p in found)
    if found:
        return None
    assert isinstance(ident, str) and isinstance(digest, str)
    return KeyEntry(ident, digest.lower(), tuple(scopes) if scopes is not None else DEFAULT_SCOPES,
                    tuple(models) if models is not None else None, expires, rpm if isinstance(rpm, int) else None,
                    line)


def _names(table: dict[str, object], field: str, found: list[str]) -> list[str] | None:
    value = table.get(field)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        found.append(f"`{field}` must be a list of strings")
        return None
    return list(value)


def _expires(value: object, found: list[str]) -> datetime | None:
    """A TOML offset datetime, or an RFC 3339 string; a time without an offset is ambiguous: refused."""
    if value is None:
        return None
    when = value
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.replace("z", "Z"))
        except ValueError:
            found.append(f"`expires` {value!r} is not an RFC 3339 time (e.g. 2027-01-01T00:00:00Z)")
            return None
    if not isinstance(when, datetime) or when.tzinfo is None:
        found.append("`expires` needs a date, a time and an offset (RFC 3339, e.g. 2027-01-01T00:00:00Z)")
        return None
    return when


def parse_expires(text: str) -> datetime:
    """An RFC 3339 time from the command line; ValueError with the reason otherwise."""
    found: list[str] = []
    when = _expires(text, found)
    if when is None:
        raise ValueError(found[0])
    return when


# Writing: embed_manage appends and removes tables, so the operator's comments elsewhere survive ----------

def render_entry(entry: KeyEntry) -> str:
    """One ``[[keys]]`` table as TOML (JSON's string escapes are valid TOML basic strings)."""
    lines = ["[[keys]]", f"id = {json.dumps(entry.id)}", f"sha256 = {json.dumps(entry.sha256)}",
             f"scopes = {json.dumps(list(entry.scopes))}"]
    if entry.models is not None:
        lines.append(f"models = {json.dumps(list(entry.models), ensure_ascii=False)}")
    if entry.expires is not None:
        lines.append(f"expires = {entry.expires.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}")
    if entry.rpm is not None:
        lines.append(f"rpm = {entry.rpm}")
    return "\n".join(lines) + "\n"


def with_entry(text: str, entry: KeyEntry) -> str:
    """``text`` with ``entry`` appended as its own table."""
    if text and not text.endswith("\n"):
        text += "\n"
    return text + ("\n" if text.strip() else "") + render_entry(entry)


def without_entry(text: str, entry: KeyEntry) -> str:
    """``text`` without the table of ``entry`` (from its header to the next table header)."""
    lines = text.splitlines(keepends=True)
    start = entry.line - 1
    end = next((i for i in range(start + 1, len(lines)) if _ANY_HEADER.match(lines[i])), len(lines))
    return "".join(lines[:start] + lines[end:])
