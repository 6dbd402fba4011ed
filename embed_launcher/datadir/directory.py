"""The data directory: where it is, whether it is writable, the state files embed_manage reads, the live status."""

from __future__ import annotations

import errno
import json
import os
import pwd
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embed_launcher.config.variables import STATUS_FILE
from embed_launcher.datadir.atomic import PUBLIC_MODE, atomic_write
from embed_launcher.reporting.errors import EXIT_CONFIG, EXIT_FAILURE, LauncherError

SECRET_MODE = 0o600
DIR_MODE = 0o755

_PERMISSION_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS)


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


def user_label(uid: int) -> tuple[str, str]:
    """(user name, "name (uid N)") for messages; the uid itself when it has no passwd entry."""
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
        keys = ApiKeys(data).resolve(embed_key, rerank_key, persistent=p, existing=existing)
    """

    def __init__(self, path: Path, *, writer: Callable[..., None] = atomic_write,
                 geteuid: Callable[[], int] = os.geteuid) -> None:
        self.path = Path(path)
        self._writer = writer
        self.geteuid = geteuid

    # -- the directory itself ------------------------------------------------------------

    def ensure(self) -> None:
        """Create the directory if needed and prove it writable, or raise one actionable error."""
        try:
            self.path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            probe = self.path / f".write-test-{os.getpid()}-{secrets.token_hex(4)}"
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SECRET_MODE))
            probe.unlink()
        except OSError as exc:
            name, who = user_label(self.geteuid())
            raise LauncherError(
                f"Error: data directory {self.path} is not writable ({exc.strerror or exc}); the "
                f"launcher runs as {who}. Fix: chown -R {name} {self.path}, or set EMBED_DATA_DIR "
                "to a writable directory (e.g. mount a volume there).",
                exit_code=EXIT_CONFIG,
            ) from None

    def is_existing_install(self) -> bool:
        """True iff state files of an earlier start are present; model caches alone do not count."""
        return any(os.path.lexists(self.path / name) for name in STATE_FILES)

    # -- state files and live status -------------------------------------------------------

    def write_state(self, *, embed_port: int, embed_model: str, embed_active: bool,
                    rerank_port: int, rerank_model: str, rerank_active: bool,
                    embed_auth: bool, rerank_auth: bool, server_addr: str) -> None:
        """Write the state files of original §1.3 (no trailing newline, each atomically)."""
        values = locals()  # the keyword names are the StateSnapshot field names
        for field, name, _ in _STATE_FIELDS:
            self.write_file(name, _format_state(values[field]), PUBLIC_MODE)

    def write_server_addr(self, addr: str) -> None:
        """Update only the advertised address (it may be looked up after start-up)."""
        self.write_file(".server_addr", addr, PUBLIC_MODE)

    def read_state(self) -> StateSnapshot:
        """The state files as far as they are present and readable."""
        values: dict[str, Any] = {f: parse(self.read_file(n)) for f, n, parse in _STATE_FIELDS}
        return StateSnapshot(**values)

    @property
    def status_path(self) -> Path:
        """The live status file (`embed_manage --status` and `--alive` read it)."""
        return self.path / STATUS_FILE

    def write_status(self, status: Mapping[str, object]) -> None:
        """Publish the live status for ``embed_manage --status``; raises the OSError as it is.

        Not wrapped in a LauncherError like the other writes: the status is best-effort, and the
        caller (supervision.publish) decides that a full disk is a warning, not an exit.
        """
        text = json.dumps(dict(status), indent=2, default=str)  # children in the launcher's order
        self._writer(self.status_path, text + "\n", PUBLIC_MODE, durable=False)

    def read_status(self) -> dict | None:
        """The last published status, or None when missing or unparseable."""
        text = self.read_file(STATUS_FILE)
        try:
            status = json.loads(text) if text else None
        except ValueError:
            return None
        return status if isinstance(status, dict) else None

    # -- files: every write atomic, every failure one actionable error without the data --------

    def read_file(self, name: str) -> str | None:
        """A file's stripped text; None when missing, empty or unreadable."""
        try:
            text = (self.path / name).read_text().strip()
        except (OSError, UnicodeDecodeError):
            return None
        return text or None

    def write_file(self, name: str, data: str, mode: int, *, durable: bool = True) -> None:
        """Write atomically with ``mode`` (never looser, even briefly), or raise one clear error."""
        path = self.path / name
        try:
            self._writer(path, data, mode, durable=durable)
        except OSError as exc:
            raise self.io_error("write", path, exc) from None

    def io_error(self, verb: str, path: Path, exc: OSError, hint: str = "") -> LauncherError:
        """The error for a failed file operation: names the path, the OS reason and the fix."""
        # Only the path and the OS reason: the data being written may be a key.
        name, who = user_label(self.geteuid())
        denied = exc.errno in _PERMISSION_ERRNOS
        fix = f"chown -R {name} {self.path}" if denied else f"check free space on {self.path}"
        extra = f", {hint}" if hint else ""
        return LauncherError(
            f"Error: cannot {verb} {path} ({exc.strerror or type(exc).__name__}) as {who}. "
            f"Fix: {fix}{extra}.",
            exit_code=EXIT_CONFIG if denied else EXIT_FAILURE,
        )
