"""Run podman for tests: the CI configuration, unique names, and cleanup of everything made.

    with podman_session("image") as pm:       # skips the test when podman is unusable
        volume = pm.volume("data")
        pm.run("run", "-d", "--name", pm.name("app"), "-v", f"{volume}:/data", "alpine", "sleep", "60")

Names made through ``name``/``volume``/``image_tag`` are removed on exit (containers first, then
volumes, then images). The configuration comes from CONTAINERS_CONF/CONTAINERS_STORAGE_CONF in the
environment, else from the env file scripts/podman-setup.sh writes. Where podman is missing or does
not work the test is skipped with the reason, unless EMBED_REQUIRE_PODMAN=1 (CI), which fails it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CI_DIR = Path(os.environ.get("PODMAN_CI_DIR", "/var/lib/embed-launcher-ci/podman"))
SETUP_HINT = 'eval "$(scripts/podman-setup.sh)" (as root) installs and configures it'
CONFIG_VARS = ("CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF")
CLEANUP_TIMEOUT_S = 60.0


class PodmanError(AssertionError):
    """A podman command failed; the message carries its command line and output."""


def read_env_file(path: Path) -> dict[str, str]:
    """``export KEY=value`` lines of the setup script's env file, as a mapping."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.removeprefix("export ").partition("=")
        if sep and key.strip():
            values[key.strip()] = value.strip()
    return values


def podman_env(environ: Mapping[str, str] = os.environ) -> dict[str, str] | str:
    """The environment podman runs with, or the reason it cannot run."""
    if shutil.which("podman", path=environ.get("PATH")) is None:
        return f"podman is not installed: {SETUP_HINT}"
    env = dict(environ)
    if not all(env.get(var) for var in CONFIG_VARS):
        env_file = CI_DIR / "env"
        if not env_file.is_file():
            return f"podman is not configured (no CONTAINERS_CONF, no {env_file}): {SETUP_HINT}"
        env.update(read_env_file(env_file))
    probe = subprocess.run(
        ["podman", "info", "--format", "{{.Store.GraphDriverName}}"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    if probe.returncode != 0:
        return f"podman does not work here ({probe.stderr.strip()[-300:]}): {SETUP_HINT}"
    return env


def unavailable(reason: str) -> None:
    """Skip (developers) or fail (CI sets EMBED_REQUIRE_PODMAN=1): never a silent pass."""
    if os.environ.get("EMBED_REQUIRE_PODMAN") == "1":
        pytest.fail(f"EMBED_REQUIRE_PODMAN=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass
class Podman:
    """podman with a fixed environment; remembers the containers, volumes and images it named."""

    env: dict[str, str]
    prefix: str
    containers: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)

    def run(self, *args: str, check: bool = True, timeout_s: float = 120.0,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``podman ARGS``; with ``check`` a non-zero exit raises PodmanError."""
        result = subprocess.run(
            ["podman", *args], env=self.env, capture_output=True, text=True,
            timeout=timeout_s, input=stdin, check=False,
        )
        if check and result.returncode != 0:
            raise PodmanError(
                f"podman {' '.join(args)} exited {result.returncode}\n"
                f"stdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-2000:]}"
            )
        return result

    def name(self, stem: str) -> str:
        """A unique container name, removed (with its anonymous volumes) at cleanup."""
        name = f"{self.prefix}-{stem}-{len(self.containers)}"
        self.containers.append(name)
        return name

    def volume(self, stem: str) -> str:
        """Create a named volume that is removed at cleanup."""
        name = f"{self.prefix}-{stem}-{len(self.volumes)}"
        self.volumes.append(name)
        self.run("volume", "create", name)
        return name

    def image_tag(self, stem: str) -> str:
        """A unique local image tag, removed at cleanup."""
        tag = f"localhost/{self.prefix}-{stem}:test"
        self.images.append(tag)
        return tag

    def adopt(self, kind: str, name: str) -> None:
        """Take responsibility for a container, volume or image made by other means."""
        {"container": self.containers, "volume": self.volumes, "image": self.images}[kind].append(name)

    def inspect(self, kind: str, name: str, template: str) -> str:
        """``podman KIND inspect --format TEMPLATE NAME``, stripped."""
        return self.run(kind, "inspect", "--format", template, name).stdout.strip()

    def cleanup(self) -> list[str]:
        """Remove everything named here; return the failures instead of raising."""
        errors: list[str] = []
        steps: list[tuple[str, ...]] = [
            ("rm", "--force", "--volumes", "--time", "0", c) for c in reversed(self.containers)
        ]
        steps += [("volume", "rm", "--force", v) for v in reversed(self.volumes)]
        steps += [("image", "rm", "--force", i) for i in reversed(self.images)]
        for step in steps:
            result = self.run(*step, check=False, timeout_s=CLEANUP_TIMEOUT_S)
            if result.returncode != 0 and "no such" not in result.stderr.lower():
                errors.append(f"podman {' '.join(step)}: {result.stderr.strip()}")
        self.containers.clear()
        self.volumes.clear()
        self.images.clear()
        return errors


def podman_or_skip(stem: str = "t") -> Podman:
    """A Podman with a fresh unique prefix, or skip/fail the test with the reason it is unusable."""
    env = podman_env()
    if isinstance(env, str):
        unavailable(env)
        raise AssertionError("unreachable")  # pytest.skip and pytest.fail raise
    return Podman(env=env, prefix=f"el-{stem}-{uuid.uuid4().hex[:8]}")


@contextmanager
def podman_session(stem: str = "t") -> Iterator[Podman]:
    """A Podman whose containers, volumes and images are removed on exit, even on failure."""
    pm = podman_or_skip(stem)
    try:
        yield pm
    finally:
        errors = pm.cleanup()
        if errors:
            raise PodmanError("cleanup failed:\n" + "\n".join(errors))
