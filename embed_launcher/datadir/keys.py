"""API keys in the data directory, by the original's rules plus our fixes (sticky, 0600, moved aside)."""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from embed_launcher.datadir.atomic import fsync_dir
from embed_launcher.datadir.directory import SECRET_MODE, DataDir, user_label

KEY_FILE = ".api_key"
DISABLED_KEY_FILE = ".api_key.disabled"
RERANK_KEY_FILE = ".rerank_api_key"
AUTO_KEY_MARKER = ".auto_api_key_created"
EXISTING_NO_KEY_NOTICES = (
    "Warning: Existing embeddings data was found but no API key is configured.",
    "Preserving no-auth behavior for backward compatibility.",
    "Set EMBED_API_KEY to enable authentication.",
)
NOT_PERSISTENT_NOTICES = (
    "API key authentication was not auto-enabled because the",
    "data directory is not persistent.",
)


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


class ApiKeys:
    """The keys kept in a data directory. Never prints: returns notices, raises LauncherError,
    and never puts a key value in a message.

    Usage::

        keys = ApiKeys(data).resolve(embed_key, rerank_key, persistent=p, existing=existing)
    """

    def __init__(self, data: DataDir) -> None:
        self.data = data

    def resolve(self, embed_key: str | None, rerank_key: str | None, *, persistent: bool,
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
            self.data.write_file(KEY_FILE, given, SECRET_MODE)
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
        self.data.write_file(KEY_FILE, key, SECRET_MODE)
        self.data.write_file(AUTO_KEY_MARKER, "true", SECRET_MODE)
        return key, "generated", []

    def _disable_key_file(self) -> list[str]:
        # Original bug §1.11.11: a kept .api_key silently re-enabled auth once the empty line
        # went away. Move it aside instead of deleting it, so nothing is lost.
        source, target = self.data.path / KEY_FILE, self.data.path / DISABLED_KEY_FILE
        if not source.exists():
            return []
        try:
            os.replace(source, target)
        except OSError as exc:
            raise self.data.io_error("move aside", source, exc) from None
        fsync_dir(self.data.path)
        return ["Note: EMBED_API_KEY is explicitly empty, so authentication is off. "
                f"The previous key was kept in {target}."]

    def _load_key_file(self, notices: list[str]) -> str | None:
        path = self.data.path / KEY_FILE
        try:
            key = path.read_text().strip()
            info = path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self.data.io_error("read", path, exc, hint="or set EMBED_API_KEY") from None
        if key:
            notices.extend(self._key_file_warnings(path, info))
        return key or None

    def _key_file_warnings(self, path: Path, info: os.stat_result) -> list[str]:
        """ssh-style checks on a key file: owned by us, and no group/other access."""
        warnings = []
        euid = self.data.geteuid()
        if info.st_uid != euid:
            warnings.append(f"Warning: {path} is owned by uid {info.st_uid}, not by the launcher's "
                            f"user {user_label(euid)[1]}; fix with chown.")
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
            self.data.write_file(RERANK_KEY_FILE, rerank, SECRET_MODE)
            return
        path = self.data.path / RERANK_KEY_FILE
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise self.data.io_error("remove", path, exc) from None

    def read_embed_key(self) -> str | None:
        """The persisted embeddings key, or None."""
        return self.data.read_file(KEY_FILE)

    def read_rerank_key(self) -> str | None:
        """The reranker's own persisted key, else the embeddings key, or None."""
        return self.data.read_file(RERANK_KEY_FILE) or self.read_embed_key()
