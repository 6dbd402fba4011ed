"""The env file as data (pure): KEY=value lines, quotes and comments, never run as a shell script."""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from pathlib import Path

from embed_launcher.config.variables import ENV_FILE_DEFAULT


def env_file_path(environ: Mapping[str, str]) -> Path:
    """The env file to read: EMBED_ENV_FILE from the process environment, else /embed.env."""
    return Path(sanitise(environ.get("EMBED_ENV_FILE", "")) or ENV_FILE_DEFAULT)


def sanitise(value: str) -> str:
    """Trim, then drop one pair of surrounding double quotes, then of single quotes (as run.sh)."""
    value = value.strip()
    for quote in ('"', "'"):
        if len(value) >= 2 and value[0] == value[-1] == quote:
            value = value[1:-1]
    return value


_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse_env_text(text: str, path: Path) -> tuple[dict[str, str], list[str], list[str]]:
    """Parse env-file text as data: (values, syntax problems, keys in file order)."""
    from dotenv.parser import parse_stream  # lazy: embed_manage imports this module

    values: dict[str, str] = {}
    problems: list[str] = []
    for binding in parse_stream(io.StringIO(text)):
        key, value = binding.key, binding.value
        if key is None and not binding.error:
            continue  # blank line or comment
        if key is not None and value is not None and _KEY.fullmatch(key):
            values[key] = sanitise(value)
            continue
        # A parse error, a bare word (a command, in shell) or a name the shell would not accept.
        line, text = line_and_text(binding.original.string, binding.original.line)
        problems.append(f"EMBED_ENV_FILE {path} line {line}: {unparseable_line(text)} (expected KEY=value)")
    return values, problems, list(values)


def unparseable_line(text: str) -> str:
    """Name a bad line by its first word only: what follows may be a key or a token."""
    first = re.match(r"[^\s=:'\"]*", text)
    word = first.group(0) if first else ""
    if word == text:
        return f"cannot parse '{text}'"
    return f"cannot parse the line starting with '{word}' (the rest is not shown: it may be a secret)"


def line_and_text(original: str, line: int) -> tuple[int, str]:
    """The real line number and text of a binding (the parser counts from preceding blank lines)."""
    stripped = original.lstrip()
    skipped = original[: len(original) - len(stripped)]
    return line + len(re.findall(r"\r\n|\r|\n", skipped)), stripped.rstrip()
