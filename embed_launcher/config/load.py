"""Reading the configuration's sources from disk: the env file (EMBED_ENV_FILE) and the models file (effects)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from embed_launcher.config import settings as config
from embed_launcher.config.settings import Settings
from embed_launcher.reporting.errors import EXIT_CONFIG, LauncherError


def read_env_file(path: Path) -> tuple[str | None, str | None]:
    """(text or None when absent, a warning or None). Unreadable is a clear exit-2 error.

    A directory counts as absent: Docker creates one when a bind-mounted ./embed.env is missing.
    """
    if path.is_dir():
        return None, (
            f"Warning: EMBED_ENV_FILE {path} is a directory, not a file (Docker creates one when the"
            " bind-mounted file is missing); ignoring it."
        )
    try:
        return path.read_text(encoding="utf-8"), None
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise LauncherError(f"Error: cannot read EMBED_ENV_FILE {path}: {reason}.", EXIT_CONFIG) from None


def load(environ: Mapping[str, str], warn: Callable[[str], None]) -> Settings:
    """Settings from the process environment and the env file it names; warnings go to ``warn``."""
    env_file = config.env_file_path(environ)
    text, warning = read_env_file(env_file)
    if warning:
        warn(warning)
    settings = config.load_settings(
        environ, text, env_file=env_file, cwd=Path.cwd(), read_file=lambda path: path.read_text(encoding="utf-8")
    )
    for note in settings.warnings:
        warn(f"Warning: {note}")
    return settings
