"""Reading the env file from disk: absent is fine, a directory is ignored with a warning, garbage is exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from embed_launcher.config.load import load, read_env_file
from embed_launcher.reporting.errors import LauncherError


def test_missing_env_file_is_fine(tmp_path: Path) -> None:
    """No /embed.env: nothing to read, nothing to say."""
    assert read_env_file(tmp_path / "embed.env") == (None, None)


def test_a_directory_in_place_of_the_env_file_is_ignored_with_a_warning(tmp_path: Path) -> None:
    """Docker creates a directory when the bind-mounted ./embed.env is missing: warn, don't fail."""
    (tmp_path / "embed.env").mkdir()
    text, warning = read_env_file(tmp_path / "embed.env")
    assert text is None
    assert warning is not None and "is a directory" in warning and str(tmp_path / "embed.env") in warning


def test_an_undecodable_env_file_is_a_configuration_error(tmp_path: Path) -> None:
    """Bytes that are not UTF-8: one line naming the file, exit 2."""
    path = tmp_path / "embed.env"
    path.write_bytes(b"EMBED_MODEL=\xff\xfe\n")
    with pytest.raises(LauncherError) as info:
        read_env_file(path)
    assert info.value.exit_code == 2 and str(path) in info.value.message


def test_load_merges_the_file_and_reports_its_warnings(tmp_path: Path) -> None:
    """The file's values win over the environment; unknown-variable warnings reach the sink."""
    path = tmp_path / "embed.env"
    path.write_text("EMBED_PORT=9100\nEMBED_MODLE=x\n")
    warnings: list[str] = []
    settings = load({"EMBED_ENV_FILE": str(path), "EMBED_PORT": "9000"}, warnings.append)
    assert settings.embed.port == 9100
    assert any("EMBED_MODLE" in w and "EMBED_MODEL" in w for w in warnings)
