"""embed_manage --addkey / --listkeys / --revokekey: the keys file, edited atomically (hashes only).

The file is EMBED_API_KEYS_FILE, else <data dir>/keys.toml (the gateway watches either, even while it
does not exist yet). A running gateway applies each change from its next request on: no restart, no signal needed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from embed_launcher.config.load import load
from embed_launcher.datadir.atomic import atomic_write
from embed_launcher.datadir.directory import SECRET_MODE
from embed_launcher.datadir.keys import generate_key
from embed_launcher.gateway.keyfile import (
    DEFAULT_ID,
    ID_PATTERN,
    SCOPES,
    KeyEntry,
    KeyFileError,
    hash_key,
    parse_expires,
    parse_keys,
    with_entry,
    without_entry,
)
from embed_launcher.gateway.keyuse import WRITE_EVERY_S, read_uses
from embed_launcher.reporting.console import Console
from embed_launcher.reporting.errors import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, LauncherError

NO_RECORD = "-"  # the gateway has not recorded a use (none yet, or it could not write its record)
ROW = "  {id:<20} {scopes:<22} {models:<30} {expires:<22} {last}"


def keys_file(environ: Mapping[str, str], console: Console) -> Path:
    """The file the launcher would use (EMBED_API_KEYS_FILE from the environment or the env file)."""
    return locations(environ, console)[0]


def locations(environ: Mapping[str, str], console: Console) -> tuple[Path, Path]:
    """(the keys file, the data directory where the gateway records each key's last use)."""
    settings = load(environ, console.warn)
    assert settings.keys_file is not None  # the settings always name one (the data directory's by default)
    return settings.keys_file, settings.data_dir


@contextlib.contextmanager
def editing(path: Path) -> Iterator[None]:
    """One embed_manage edit at a time (flock on the file's directory): two --addkey never lose one."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise LauncherError(f"Error: cannot open the directory of the keys file {path}: {exc.strerror or exc}") \
            from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as exc:
        raise LauncherError(f"Error: cannot read the keys file {path}: {getattr(exc, 'strerror', None) or exc}") \
            from None


def current(path: Path) -> tuple[str, tuple[KeyEntry, ...]]:
    """The file's text and keys; a file with an error is not edited (fix it first)."""
    text = read_text(path)
    try:
        return text, parse_keys(text, str(path))
    except KeyFileError as exc:
        raise LauncherError(f"Error: {exc}. Fix the file first; embed_manage edits only a valid keys file.") from None


def split_names(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))


def new_entry(key_id: str, key: str, scopes: str | None, models: str | None, expires: str | None,
              rpm: int | None) -> KeyEntry:
    """The entry for a new key, every option checked (exit 2 with the fix on a bad one)."""
    if not ID_PATTERN.match(key_id) or key_id == DEFAULT_ID:
        raise LauncherError(f"Error: '{key_id}' cannot be a key id: use letters, digits and . _ @ - (64 at most),"
                            f" and not '{DEFAULT_ID}' (the implicit key).", EXIT_CONFIG)
    chosen = split_names(scopes)
    if chosen is not None and (not chosen or any(s not in SCOPES for s in chosen)):
        raise LauncherError(f"Error: --scopes takes a comma-separated list of {', '.join(SCOPES)}; got '{scopes}'.",
                            EXIT_CONFIG)
    names = split_names(models)
    if names is not None and not names:
        raise LauncherError("Error: --models takes a comma-separated list of model names or aliases.", EXIT_CONFIG)
    when = None
    if expires is not None:
        try:
            when = parse_expires(expires)
        except ValueError as exc:
            raise LauncherError(f"Error: --expires: {exc}.", EXIT_CONFIG) from None
    if rpm is not None and rpm < 1:
        raise LauncherError("Error: --rpm takes a whole number of requests per minute, at least 1.", EXIT_CONFIG)
    return KeyEntry(key_id, hash_key(key), chosen or ("embed", "rerank"), names, when, rpm)


def add_key(environ: Mapping[str, str], console: Console, key_id: str, *, scopes: str | None = None,
            models: str | None = None, expires: str | None = None, rpm: int | None = None) -> int:
    """Write a new key's hash; print the key once (it is stored nowhere in clear)."""
    key = generate_key()
    entry = new_entry(key_id, key, scopes, models, expires, rpm)
    path = keys_file(environ, console)
    with editing(path):
        text, keys = current(path)
        if any(k.id == key_id for k in keys):
            raise LauncherError(f"Error: the keys file {path} has a key '{key_id}' already. To rotate it, add a new"
                                f" id, move the clients to it, then --revokekey {key_id}.")
        write(path, with_entry(text, entry))
    console.lines(["", f"API key '{key_id}' added to {path}; a running gateway applies it from its next request on.",
                   "Copy it now: only its SHA-256 is stored, it cannot be shown again.", "", key, "",
                   f'Use with: -H "Authorization: Bearer {key}"', ""])
    return EXIT_OK


def revoke_key(environ: Mapping[str, str], console: Console, key_id: str) -> int:
    path = keys_file(environ, console)
    with editing(path):
        text, keys = current(path)
        entry = next((k for k in keys if k.id == key_id), None)
        if entry is None:
            known = ", ".join(k.id for k in keys) or "none"
            console.error(f"Error: no key '{key_id}' in {path} (its keys: {known}).")
            return EXIT_FAILURE
        write(path, without_entry(text, entry))
    console.info(f"API key '{key_id}' revoked in {path}; a running gateway refuses it (401) from its next request on.")
    return EXIT_OK


def write(path: Path, text: str) -> None:
    """Atomically (the gateway never reads half a file), 0600 (ids and policies are nobody else's business)."""
    try:
        atomic_write(path, text, SECRET_MODE)
    except OSError as exc:
        raise LauncherError(f"Error: cannot write the keys file {path}: {exc.strerror or exc}") from None


def list_keys(environ: Mapping[str, str], console: Console) -> int:
    path, data_dir = locations(environ, console)
    _, keys = current(path)
    uses = read_uses(data_dir)
    lines = ["", f"API keys in {path}" + ("" if path.exists() else " (no file yet)") + ":", "",
             ROW.format(id="Id", scopes="Scopes", models="Models", expires="Expires", last="Last use"),
             ROW.format(id="--", scopes="------", models="------", expires="-------", last="--------")]
    lines += [row(k, uses.get(k.id)) for k in keys]
    lines += ["", "  The default key (embed_manage --getkey) is not listed: it is set by EMBED_API_KEY.",
              f"  Last use: recorded by the gateway in {data_dir} at most every {WRITE_EVERY_S:g} s"
              f" ('{NO_RECORD}': none recorded).", ""]
    console.lines(lines)
    return EXIT_OK


def row(key: KeyEntry, last_use: float | None, now: datetime | None = None) -> str:
    expires = "never"
    if key.expires is not None:
        expires = stamp(key.expires)
        if key.expires <= (now or datetime.now(UTC)):
            expires += " (expired)"
    rpm = f" ({key.rpm} rpm)" if key.rpm else ""
    last = stamp(datetime.fromtimestamp(last_use, UTC)) if last_use else NO_RECORD
    return ROW.format(id=key.id, scopes=",".join(key.scopes) + rpm, models=names(key.models), expires=expires,
                      last=last)


def stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def names(models: Sequence[str] | None) -> str:
    return "all" if models is None else ",".join(models)
