"""At start, the keys file is configuration: one that cannot be used stops the launcher (exit 2)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from embed_launcher.config.settings import Settings
from embed_launcher.gateway.keyfile import KeyEntry, KeyFileError
from embed_launcher.gateway.keystore import read_keys
from embed_launcher.reporting.errors import ConfigError


def check_keys_file(settings: Settings, warn: Callable[[str], None],
                    read: Callable[[Path], tuple[KeyEntry, ...]] = read_keys) -> tuple[KeyEntry, ...]:
    """The keys file's keys; ConfigError naming the file, the line and the problem.

    EMBED_API_KEYS_FILE names a file that must exist; the default (<data dir>/keys.toml) may be
    absent (no keys yet: `embed_manage --addkey` creates it, the gateway picks it up).
    """
    path = settings.keys_file
    if path is None:
        return ()
    if settings.keys_file_given and not path.exists():
        raise ConfigError([f"EMBED_API_KEYS_FILE names {path}, which does not exist. Create it"
                           " (embed_manage --addkey ID writes it) or unset EMBED_API_KEYS_FILE."])
    if not settings.keys_file_given and not path.is_file():
        return ()  # no keys yet; a data directory that is not usable is reported by its own check
    try:
        keys = read(path)
    except KeyFileError as exc:
        raise ConfigError([f"{exc}. Fix it, or check it with embed_manage --listkeys."]) from None
    if keys and not settings.gateway:
        warn(f"Warning: {path} holds {len(keys)} API key(s), but the gateway is off (EMBED_GATEWAY=false), so"
             " only the default key works. Set EMBED_GATEWAY=auto to use them.")
    return keys
