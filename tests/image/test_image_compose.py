"""The README's compose quick start, with Compose v2 driving podman through its Docker API.

`docker compose -f docker/docker-compose.yml up -d --build --wait` becomes the same command run by
the standalone docker-compose binary, with one override file: host networking (this sandbox has no
bridge networks, and the Hub stand-in listens on 127.0.0.1), free ports, and unique container,
image and volume names, so a developer's own `embeddings` container is never touched. The key is
read with `docker-compose exec` (there is no docker CLI here). podman 4.3 runs no health checks by
itself (systemd timers), so the test runs them while `--wait` waits.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_ports, wait_until
from containers.podman import Podman, unavailable
from fake_hub.server import HubStandIn

from image.compose import Compose, compose_binary, podman_service
from image.launcher_container import Container

pytestmark = [pytest.mark.image, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker" / "docker-compose.yml"
UP_TIMEOUT_S = 900.0


@pytest.fixture
def binary() -> Path:
    found = compose_binary()
    if isinstance(found, str):
        unavailable(found)
        raise AssertionError("unreachable")
    return found


def override(pm: Podman, hub: HubStandIn, ports: dict[str, int]) -> str:
    env = {
        "HF_ENDPOINT": hub.endpoint, "EMBED_HOST": "127.0.0.1", "EMBED_SERVER_ADDR": "127.0.0.1",
        **{k: str(v) for k, v in ports.items()},
    }  # fmt: skip
    lines = [f"      {k}: \"{v}\"" for k, v in env.items()]
    return "\n".join([
        "services:",
        "  embeddings:",
        f"    image: {pm.image_tag('compose')}",
        f"    container_name: {pm.name('compose')}",
        "    network_mode: host",
        "    ports: !reset []",
        "    environment:",
        *lines,
        "volumes:",
        "  embeddings-data:",
        f"    name: {pm.prefix}-data",
        "",
    ])  # fmt: skip


@pytest.fixture
def compose(pm: Podman, binary: Path, hub: HubStandIn, tmp_path: Path) -> Iterator[tuple[Compose, Container]]:
    ports = dict(zip(("EMBED_PORT", "EMBED_PROMETHEUS_PORT"), free_ports(2), strict=True))
    path = tmp_path / "override.yml"
    path.write_text(override(pm, hub, ports))
    images_before = set(pm.run("images", "--all", "--quiet", "--no-trunc").stdout.split())
    with podman_service(pm, tmp_path) as docker_host:
        project = Compose(binary, pm.prefix, (COMPOSE_FILE, path), docker_host, ROOT)
        yield project, Container(pm, pm.containers[-1], {**ports, "RERANK_PORT": 0}, f"{pm.prefix}-data")
        project.run("down", "--volumes", "--rmi", "all", "--timeout", "10")
    pm.adopt("volume", f"{pm.prefix}-data")
    # The compose build's own layers: only those that appeared during this test and are dangling.
    after = pm.run("images", "--all", "--quiet", "--no-trunc", "--filter", "dangling=true").stdout.split()
    for image in set(after) - images_before:
        pm.run("image", "rm", image, check=False)


def test_compose_file_names_the_volume_and_needs_no_env_file(binary: Path) -> None:
    """The volume is `embeddings-data` (as the README says) and a missing docker/embed.env is fine."""
    result = subprocess.run([str(binary), "-f", str(COMPOSE_FILE), "config", "--format", "json"],
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    assert config["volumes"]["embeddings-data"]["name"] == "embeddings-data"
    assert "start_interval" not in config["services"]["embeddings"]["healthcheck"]


def test_readme_quick_start(compose: tuple[Compose, Container], tmp_path: Path) -> None:
    """up -d --build --wait returns once healthy; the key guards the API; the checkout is left as it was."""
    project, container = compose
    env_file = ROOT / "docker" / "embed.env"
    fresh_clone = not env_file.exists()
    up = project.start("up", "-d", "--build", "--wait", "--wait-timeout", str(int(UP_TIMEOUT_S)),
                       log=tmp_path / "up.log")  # fmt: skip
    try:
        # No systemd timers: run the health check as the engine would, until --wait sees it pass.
        wait_until(lambda: up.poll() is not None or container.healthy(), timeout_s=UP_TIMEOUT_S, interval_s=1.0)
        up.wait(timeout=60)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    assert up.returncode == 0, (tmp_path / "up.log").read_text()[-4000:]
    key = project.run("exec", "-T", "embeddings", "embed_manage", "--getkey").stdout.strip()
    assert key.startswith("embed-")
    assert container.embed(key) == 200
    assert container.embed(None) == 401
    if fresh_clone:
        assert not env_file.exists(), "compose created docker/embed.env in the checkout"
