"""Where embed_manage finds the server's data directory."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from embed_launcher.config.variables import DATA_DIR_DEFAULT


def data_dir(environ: Mapping[str, str]) -> Path:
    """The data directory embed_manage reads (the launcher's default unless EMBED_DATA_DIR says otherwise)."""
    return Path(environ.get("EMBED_DATA_DIR") or DATA_DIR_DEFAULT).absolute()
