"""The podman test helper: configuration lookup, unique names, cleanup of what it made."""

from __future__ import annotations

from pathlib import Path

import pytest

from containers.podman import Podman, podman_env, podman_session, read_env_file

pytestmark = pytest.mark.image


def test_env_file_lines_become_a_mapping(tmp_path: Path) -> None:
    """The setup script's ``export K=V`` lines are read as data."""
    env_file = tmp_path / "env"
    env_file.write_text("export CONTAINERS_CONF=/x/containers.conf\n\nexport CONTAINERS_STORAGE_CONF=/x/s.conf\n")
    assert read_env_file(env_file) == {"CONTAINERS_CONF": "/x/containers.conf", "CONTAINERS_STORAGE_CONF": "/x/s.conf"}


def test_missing_podman_is_a_reason_not_an_error() -> None:
    """Without podman on PATH the helper says why and how to get it."""
    reason = podman_env({"PATH": "/nonexistent"})
    assert isinstance(reason, str)
    assert "podman is not installed" in reason
    assert "scripts/podman-setup.sh" in reason


def test_session_removes_the_volumes_it_made() -> None:
    """A volume made in a session is gone after it, and names never collide between sessions."""
    with podman_session("helper") as pm:
        volume = pm.volume("data")
        assert pm.run("volume", "exists", volume, check=False).returncode == 0
        env = pm.env
    with podman_session("helper") as other:
        assert other.prefix != pm.prefix
    assert pm.volumes == []
    assert Podman(env=env, prefix="x").run("volume", "exists", volume, check=False).returncode == 1
