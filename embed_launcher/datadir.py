"""The data directory: API keys by the original's rules, the state files embed_manage reads, the live status."""

from __future__ import annotations

import errno
import json
import os
import pwd
import secrets
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embed_launcher.atomic import PUBLIC_MODE, atomic_write, fsync_dir
from embed_launcher.errors import EXIT_CONFIG, EXIT_FAILURE, LauncherError

SECRET_MODE = 0o600
DIR_MODE = 0o755

KEY_FILE = ".api_key"
DISABLED_KEY_FILE = ".api_key.disabled"
RERANK_KEY_FILE = ".rerank_api_key"
AUTO_KEY_MARKER = ".auto_api_key_created"
STATUS_FILE = ".status.json"

EXISTING_NO_KEY_NOTICES = (
    "Warning: Existing embeddings data was found but no API key is configured.",
    "Preserving no-auth behavior for backward compatibility.",
    "Set EMBED_API_KEY to enable authentication.",
)
NOT_PERSISTENT_NOTICES = (
    "API key authentication was not auto-enabled because the",
    "data directory is not persistent.",
)

_PERMISSION_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS)



def generate_key() -> str:
    """A fresh API key in the original's format: ``embed-`` + 48 lowercase hex characters."""
    return "embed-" + secrets.token_hex(24)


@dataclass(frozen=True)
class KeyResolution:
    """The keys the children get, where the embeddings key came from, what to tell the user."""

    embed_key: str | None
    rerank_key: str | None
    source: str  # "given" | "file" | "generated" | "none"
    notices: tuple[str, ...] = ()

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every non-empty key, for masking in relayed logs."""
        return tuple(dict.fromkeys(k for k in (self.embed_key, self.rerank_key) if k))


@dataclass(frozen=True)
class StateSnapshot:
    """The state files as embed_manage sees them; None wherever a file is missing or unreadable."""

    embed_port: int | None = None
    embed_model: str | None = None
    server_addr: str | None = None
    embed_active: bool | None = None
    rerank_active: bool | None = None
    rerank_port: int | None = None
    rerank_model: str | None = None
    embed_auth: bool | None = None
    rerank_auth: bool | None = None


def _format_state(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _parse_flag(text: str | None) -> bool | None:
    return {"1": True, "0": False}.get(text or "")


def _parse_port(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() else None


def _parse_text(text: str | None) -> str | None:
    return text


# StateSnapshot field, state file (original §1.3), parser.
_STATE_FIELDS: tuple[tuple[str, str, Callable[[str | None], object]], ...] = (
    ("embed_port", ".port", _parse_port), ("embed_model", ".model", _parse_text),
    ("server_addr", ".server_addr", _parse_text), ("embed_active", ".embed_active", _parse_flag),
    ("rerank_active", ".rerank_active", _parse_flag), ("rerank_port", ".rerank_port", _parse_port),
    ("rerank_model", ".rerank_model", _parse_text),
    ("embed_auth", ".embed_auth_enabled", _parse_flag),
    ("rerank_auth", ".rerank_auth_enabled", _parse_flag),
)
# Written on every start: any of them means an earlier start used this directory.
STATE_FILES = tuple(name for _, name, _ in _STATE_FIELDS)


def _user_label(uid: int) -> tuple[str, str]:
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:  # arbitrary uids (OpenShift, docker run --user 1234) have no passwd entry
        name = str(uid)
    return name, f"{name} (uid {uid})"


class DataDir:
    """The launcher's data directory (default /var/lib/embeddings). Never prints: it returns
    notices and raises LauncherError, and never puts a key value in a message.

    Usage::

        data = DataDir(settings.data_dir)
        data.ensure()
        existing = data.is_existing_install()      # before write_state()
        keys = data.resolve_keys(embed_key, rerank_key, persistent=p, existing=existing)
    """

    def __init__(self, path: Path, *, writer: Callable[..., None] = atomic_write,
                 geteuid: Callable[[], int] = os.geteuid) -> None:
        self.path = Path(path)
        self._writer = writer
        self._geteuid = geteuid

    # -- the directory itself ------------------------------------------------------------

    def ensure(self) -> None:
        """Create the directory if needed and prove it writable, or raise one actionable error."""
        try:
            self.path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            probe = self.path / f".write-test-{os.getpid()}-{secrets.token_hex(4)}"
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SECRET_MODE))
            probe.unlink()
        except OSError as exc:
            name, who = _user_label(self._geteuid())
            raise LauncherError(
                f"Error: data directory {self.path} is not writable ({exc.strerror or exc}); the "
                f"launcher runs as {who}. Fix: chown -R {name} {self.path}, or set EMBED_DATA_DIR "
                "to a writable directory (e.g. mount a volume there).",
                exit_code=EXIT_CONFIG,
            ) from None

    def is_existing_install(self) -> bool:
        """True iff state files of an earlier start are present; model caches alone do not count."""
        return any(os.path.lexists(self.path / name) for name in STATE_FILES)

    # -- API keys ------------------------------------------------------------------------

    def resolve_keys(self, embed_key: str | None, rerank_key: str | None, *, persistent: bool,
                     existing: bool,
                     token_factory: Callable[[], str] = generate_key) -> KeyResolution:
        """Apply the original's key rules (§1.2) plus our fixes; persist what must be persisted."""
        embed, source, notices = self._resolve_embed_key(
            embed_key, persistent=persistent, existing=existing, token_factory=token_factory)
        rerank = embed if rerank_key is None else (rerank_key or None)
        self._sync_rerank_key(embed, rerank)
        return KeyResolution(embed, rerank, source, tuple(notices))

    def _resolve_embed_key(self, given: str | None, *, persistent: bool, existing: bool,
                           token_factory: Callable[[], str]) -> tuple[str | None, str, list[str]]:
        if given:
            self._write(KEY_FILE, given, SECRET_MODE)
            return given, "given", []
        if given == "":
            return None, "none", self._disable_key_file()
        notices: list[str] = []
        loaded = self._load_key_file(notices)
        if loaded:
            return loaded, "file", notices
        if not persistent:
            return None, "none", list(NOT_PERSISTENT_NOTICES)
        if existing:
            return None, "none", list(EXISTING_NO_KEY_NOTICES)
        key = token_factory()
        self._write(KEY_FILE, key, SECRET_MODE)
        self._write(AUTO_KEY_MARKER, "true", SECRET_MODE)
        return key, "generated", []

    def _disable_key_file(self) -> list[str]:
        # Original bug §1.11.11: a kept .api_key silently re-enabled auth once the empty line
        # went away. Move it aside instead of deleting it, so nothing is lost.
        source, target = self.path / KEY_FILE, self.path / DISABLED_KEY_FILE
        if not source.exists():
            return []
        try:
            os.replace(source, target)
        except OSError as exc:
            raise self._io_error("move aside", source, exc) from None
        fsync_dir(self.path)
        return ["Note: EMBED_API_KEY is explicitly empty, so authentication is off. "
                f"The previous key was kept in {target}."]

    def _load_key_file(self, notices: list[str]) -> str | None:
        path = self.path / KEY_FILE
        try:
            key = path.read_text().strip()
            info = path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._io_error("read", path, exc, hint="or set EMBED_API_KEY") from None
        if key:
            notices.extend(self._key_file_warnings(path, info))
        return key or None

    def _key_file_warnings(self, path: Path, info: os.stat_result) -> list[str]:
        """ssh-style checks on a key file: owned by us, and no group/other access."""
        warnings = []
        euid = self._geteuid()
        if info.st_uid != euid:
            warnings.append(f"Warning: {path} is owned by uid {info.st_uid}, not by the launcher's "
                            f"user {_user_label(euid)[1]}; fix with chown.")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            try:
                os.chmod(path, SECRET_MODE)
            except OSError as exc:
                warnings.append(f"Warning: {path} is accessible by other users (mode "
                                f"{mode:04o}) and could not be tightened ({exc.strerror}); "
                                f"run chmod 600 {path}.")
            else:
                warnings.append(f"Warning: {path} was accessible by other users (mode {mode:04o}); "
                                "tightened to 0600.")
        return warnings

    def _sync_rerank_key(self, embed: str | None, rerank: str | None) -> None:
        # Fix of §1.11.11: a reranker key of its own is persisted so embed_manage can show it.
        if rerank and rerank != embed:
            self._write(RERANK_KEY_FILE, rerank, SECRET_MODE)
            return
        path = self.path / RERANK_KEY_FILE
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise self._io_error("remove", path, exc) from None

    def read_embed_key(self) -> str | None:
        """The persisted embeddings key, or None."""
        return self._read(KEY_FILE)

    def read_rerank_key(self) -> str | None:
        """The reranker's own persisted key, else the embeddings key, or None."""
        return self._read(RERANK_KEY_FILE) or self.read_embed_key()

    # -- state files and live status -------------------------------------------------------

    def write_state(self, *, embed_port: int, embed_model: str, embed_active: bool,
                    rerank_port: int, rerank_model: str, rerank_active: bool,
                    embed_auth: bool, rerank_auth: bool, server_addr: str) -> None:
        """Write the state files of original §1.3 (no trailing newline, each atomically)."""
        values = locals()  # the keyword names are the StateSnapshot field names
        for field, name, _ in _STATE_FIELDS:
            self._write(name, _format_state(values[field]), PUBLIC_MODE)

    def write_server_addr(self, addr: str) -> None:
        """Update only the advertised address (it may be looked up after start-up)."""
        self._write(".server_addr", addr, PUBLIC_MODE)

    def read_state(self) -> StateSnapshot:
        """The state files as far as they are present and readable."""
        values: dict[str, Any] = {f: parse(self._read(n)) for f, n, parse in _STATE_FIELDS}
        return StateSnapshot(**values)

    def write_status(self, status: Mapping[str, object]) -> None:
        """Publish the live status for ``embed_manage --status``."""
        text = json.dumps(dict(status), indent=2, sort_keys=True, default=str)
        self._write(STATUS_FILE, text + "\n", PUBLIC_MODE)

    def read_status(self) -> dict | None:
        """The last published status, or None when missing or unparseable."""
        text = self._read(STATUS_FILE)
        try:
            status = json.loads(text) if text else None
        except ValueError:
            return None
        return status if isinstance(status, dict) else None

    # -- helpers ---------------------------------------------------------------------------

    def _read(self, name: str) -> str | None:
        try:
            text = (self.path / name).read_text().strip()
        except (OSError, UnicodeDecodeError):
            return None
        return text or None

    def _write(self, name: str, data: str, mode: int) -> None:
        path = self.path / name
        try:
            self._writer(path, data, mode)
        except OSError as exc:
            raise self._io_error("write", path, exc) from None

    def _io_error(self, verb: str, path: Path, exc: OSError, hint: str = "") -> LauncherError:
        # Only the path and the OS reason: the data being written may be a key.
        name, who = _user_label(self._geteuid())
        denied = exc.errno in _PERMISSION_ERRNOS
        fix = f"chown -R {name} {self.path}" if denied else f"check free space on {self.path}"
        extra = f", {hint}" if hint else ""
        return LauncherError(
            f"Error: cannot {verb} {path} ({exc.strerror or type(exc).__name__}) as {who}. "
            f"Fix: {fix}{extra}.",
            exit_code=EXIT_CONFIG if denied else EXIT_FAILURE,
        )
