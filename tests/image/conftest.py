"""Session fixtures for the image tests: the TEI-lookalike base, the image built once, the Hub stand-in."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from containers.podman import Podman, podman_session, unavailable
from fake_hub.server import HubStandIn

from image.launcher_container import BuiltImage, Starter

ROOT = Path(__file__).resolve().parents[2]
BASE_TAG = "ghcr.io/huggingface/text-embeddings-inference:cpu-1.9.3"
BASE_TIMEOUT_S = 900.0  # a first rootfs from the Debian mirror; later runs reuse the cache
BUILD_TIMEOUT_S = 600.0


@pytest.fixture(scope="session")
def session_podman() -> Iterator[Podman]:
    """podman for the whole session; removes the image it built at the end."""
    with podman_session("image") as pm:
        yield pm


@pytest.fixture(scope="session")
def base_image(session_podman: Podman) -> str:
    """The TEI-lookalike base, built (or found up to date) by scripts/build-tei-lookalike.sh."""
    result = subprocess.run(
        [str(ROOT / "scripts" / "build-tei-lookalike.sh")], env=session_podman.env, capture_output=True,
        text=True, timeout=BASE_TIMEOUT_S, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        unavailable(f"the TEI-lookalike base could not be built:\n{result.stderr[-3000:]}")
    return BASE_TAG


@pytest.fixture(scope="session")
def launcher_image(session_podman: Podman, base_image: str) -> BuiltImage:
    """docker/Dockerfile built once per session, unchanged, the way a podman user builds it."""
    tag = session_podman.image_tag("launcher")
    result = session_podman.run(
        "build", "--format", "docker", "--layers=false", "--network", "host", "--pull=never",
        "-f", "docker/Dockerfile", "-t", tag, str(ROOT), timeout_s=BUILD_TIMEOUT_S, check=False,
    )  # fmt: skip
    log = result.stdout + result.stderr
    assert result.returncode == 0, f"podman build failed:\n{log[-4000:]}"
    return BuiltImage(tag, log)


@pytest.fixture(scope="session")
def hub() -> Iterator[HubStandIn]:
    """The Hub stand-in the containers download from: 127.0.0.1 is shared with host-network containers."""
    with HubStandIn() as stand_in:
        yield stand_in


@pytest.fixture
def pm(session_podman: Podman) -> Iterator[Podman]:
    """podman for one test: every container and volume it names is removed after the test."""
    with podman_session("image") as own:
        yield own


@pytest.fixture
def start(pm: Podman, launcher_image: BuiltImage, hub: HubStandIn) -> Starter:
    """Start the launcher image on free ports, downloading from the Hub stand-in."""
    return Starter(pm, launcher_image.tag, hub.endpoint)

