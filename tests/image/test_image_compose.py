"""The README's quick start, run as written, with Compose v2 driving podman through its Docker API.

The README's marked block (tests/readme_quickstart.py) runs under bash, unchanged, with three
stand-ins on PATH, because there is no docker CLI here:
- `docker compose ARGS` runs the standalone docker-compose binary with the README's own `-f` files
  plus one override: host networking (this sandbox has no bridge networks, and the Hub stand-in
  listens on 127.0.0.1), free ports, and unique container, image and volume names, so a
  developer's own `embeddings` container is never touched;
- `docker exec embeddings CMD` runs `podman exec <that container> CMD`;
- `curl` sends `localhost:8000` and `localhost:8001` to the free ports the container listens on.
podman 4.3 runs no health checks by itself (systemd timers), so the test runs them while `--wait` waits.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_ports, wait_until
from containers.podman import Podman, unavailable
from fake_hub.server import HubStandIn
from readme_quickstart import quick_start_script

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


PORTS = ("EMBED_PORT", "RERANK_PORT", "EMBED_PROMETHEUS_PORT", "RERANK_PROMETHEUS_PORT")


@pytest.fixture
def compose(pm: Podman, binary: Path, hub: HubStandIn, tmp_path: Path,
            base_image: str) -> Iterator[tuple[Compose, Container]]:  # fmt: skip
    """The stack of the README, named for this test; `base_image`: compose builds on the TEI lookalike."""
    ports = dict(zip(PORTS, free_ports(len(PORTS)), strict=True))
    path = tmp_path / "override.yml"
    path.write_text(override(pm, hub, ports))
    images_before = set(pm.run("images", "--all", "--quiet", "--no-trunc").stdout.split())
    with podman_service(pm, tmp_path) as docker_host:
        project = Compose(binary, pm.prefix, (COMPOSE_FILE, path), docker_host, ROOT)
        yield project, Container(pm, pm.containers[-1], ports, f"{pm.prefix}-data")
        project.run("down", "--volumes", "--rmi", "all", "--timeout", "10")
    pm.adopt("volume", f"{pm.prefix}-data")
    # The compose build's own layers: only those that appeared during this test and are dangling.
    after = pm.run("images", "--all", "--quiet", "--no-trunc", "--filter", "dangling=true").stdout.split()
    for image in set(after) - images_before:
        pm.run("image", "rm", image, check=False)


def shims(directory: Path, project: Compose, container: Container) -> Path:
    """A bin directory with `docker` and `curl` that carry the README's commands to this sandbox."""
    directory.mkdir()
    override = project.files[-1]
    docker = f"""#!/bin/bash
set -euo pipefail
case "$1" in
  compose)  # the README's -f files first, then the override, then the command
    shift; files=()
    while [[ $1 == -f ]]; do files+=(-f "$2"); shift 2; done
    exec {shlex.quote(str(project.binary))} -p {shlex.quote(project.project)} "${{files[@]}}" \\
      -f {shlex.quote(str(override))} "$@" ;;
  exec)
    shift; [[ $1 == embeddings ]] || {{ echo "docker shim: unexpected container $1" >&2; exit 2; }}
    shift; exec podman exec {shlex.quote(container.name)} "$@" ;;
  *) echo "docker shim: unexpected command $*" >&2; exit 2 ;;
esac
"""
    curl = f"""#!/bin/bash
args=()
for a in "$@"; do
  a=${{a//localhost:8000/127.0.0.1:{container.ports["EMBED_PORT"]}}}
  a=${{a//localhost:8001/127.0.0.1:{container.ports["RERANK_PORT"]}}}
  args+=("$a")
done
exec {shutil.which("curl") or "/usr/bin/curl"} --max-time 60 "${{args[@]}}"
"""
    for name, text in (("docker", docker), ("curl", curl)):
        (directory / name).write_text(text)
        (directory / name).chmod(0o755)
    return directory


def test_compose_file_names_the_volume_and_needs_no_env_file(binary: Path) -> None:
    """The volume is `embeddings-data` (as the README says) and a missing docker/embed.env is fine."""
    result = subprocess.run([str(binary), "-f", str(COMPOSE_FILE), "config", "--format", "json"],
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    assert config["volumes"]["embeddings-data"]["name"] == "embeddings-data"
    assert "start_interval" not in config["services"]["embeddings"]["healthcheck"]


def test_readme_quick_start_runs_as_written(compose: tuple[Compose, Container], tmp_path: Path) -> None:
    """The README's block, unchanged: up --wait returns once healthy, then an embedding and a rerank call.

    It also leaves the checkout as it was (no docker/embed.env, no docker/.env is needed or made).
    """
    project, container = compose
    created = [ROOT / "docker" / "embed.env", ROOT / "docker" / ".env"]
    fresh_clone = not any(f.exists() for f in created)
    script = tmp_path / "quick-start.sh"
    script.write_text(quick_start_script())
    bin_dir = shims(tmp_path / "bin", project, container)
    env = {**project.env(), **container.pm.env, "DOCKER_HOST": project.docker_host,
           "PATH": f"{bin_dir}{os.pathsep}{Path(project.binary).parent}{os.pathsep}{os.environ['PATH']}"}
    output = tmp_path / "quick-start.out"
    with open(output, "wb") as out:
        run = subprocess.Popen(["bash", "-eu", str(script)], cwd=ROOT, env=env, stdout=out,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # fmt: skip
    try:
        # No systemd timers: run the health check as the engine would, until --wait sees it pass.
        wait_until(lambda: run.poll() is not None or container.healthy(), timeout_s=UP_TIMEOUT_S, interval_s=1.0)
        run.wait(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    printed = output.read_text()
    assert run.returncode == 0, printed[-4000:]
    embedding, ranking = (json.loads(line) for line in printed.splitlines()[-2:])
    assert embedding["model"] == "BAAI/bge-small-en-v1.5" and len(embedding["data"]) == 1
    assert embedding["data"][0]["object"] == "embedding" and embedding["data"][0]["embedding"]
    assert sorted(r["index"] for r in ranking) == [0, 1] and all("score" in r for r in ranking)
    key = container.getkey()
    assert key.startswith("embed-")
    assert container.embed(None) == 401
    if fresh_clone:
        assert not any(f.exists() for f in created), "the quick start created a file in the checkout"
