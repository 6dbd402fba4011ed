"""The image as built from docker/Dockerfile on podman (buildah), and its TEI-lookalike base."""

from __future__ import annotations

import json
from typing import Any

import pytest
from containers.podman import Podman

from image.launcher_container import BuiltImage

pytestmark = [pytest.mark.image, pytest.mark.timeout(1200)]


def config(pm: Podman, image: str) -> dict[str, Any]:
    """The image's Config block (docker format), as JSON."""
    return dict(json.loads(pm.inspect("image", image, "{{json .Config}}")))


def test_build_prints_no_warnings(launcher_image: BuiltImage) -> None:
    """The build succeeds on podman 4.3 without warnings: useradd's SYS_UID_MAX, setuptools' deprecations."""
    assert "SYS_UID_MAX" not in launcher_image.build_log
    assert "BuildBackendWarning" not in launcher_image.build_log
    assert "HEALTHCHECK is not supported" not in launcher_image.build_log


def test_image_runs_the_launcher_with_a_health_check(pm: Podman, launcher_image: BuiltImage) -> None:
    """Entrypoint, health check, volume, ports and env are what the README promises."""
    cfg = config(pm, launcher_image.tag)
    assert cfg["Entrypoint"] == ["embed-launcher"]
    assert not cfg.get("Cmd")
    assert set(cfg["Volumes"]) == {"/var/lib/embeddings"}
    assert set(cfg["ExposedPorts"]) == {"8000/tcp", "8001/tcp"}
    assert cfg["StopSignal"] in ("SIGTERM", "15")
    health = json.loads(pm.inspect("image", launcher_image.tag, "{{json .HealthCheck}}"))
    assert health["Test"] == ["CMD", "embed_manage", "--status"]
    assert health["Interval"] == 10 * 10**9 and health["StartPeriod"] == 600 * 10**9
    env = dict(e.split("=", 1) for e in cfg["Env"])
    assert env["EMBED_DATA_DIR"] == env["HUGGINGFACE_HUB_CACHE"] == "/var/lib/embeddings"
    assert env["EMBED_TEI_BIN"] == "/usr/local/bin/tei-select"
    assert env["PORT"] == "8000"
    assert env["LD_PRELOAD"] == "/usr/local/libfakeintel.so"  # the base's own, untouched


def test_image_has_the_unprivileged_embed_user(pm: Podman, launcher_image: BuiltImage) -> None:
    """uid/gid 10001 ``embed`` owns the data dir, for --user 10001:10001."""
    out = pm.run("run", "--rm", "--entrypoint", "id", launcher_image.tag, "embed").stdout
    assert out.strip() == "uid=10001(embed) gid=10001(embed) groups=10001(embed)"
    owner = pm.run("run", "--rm", "--entrypoint", "stat", launcher_image.tag, "-c", "%u:%g %a",
                   "/var/lib/embeddings").stdout  # fmt: skip
    assert owner.strip() == "10001:10001 750"


def test_base_looks_like_tei_cpu(pm: Podman, base_image: str) -> None:
    """The lookalike base has TEI 1.9.3's entrypoint, env and packages, and no python3."""
    cfg = config(pm, base_image)
    assert cfg["Entrypoint"] == ["text-embeddings-router"] and cfg["Cmd"] == ["--json-output"]
    env = dict(e.split("=", 1) for e in cfg["Env"])
    assert env["HUGGINGFACE_HUB_CACHE"] == "/data" and env["PORT"] == "80"
    assert env["MKL_ENABLE_INSTRUCTIONS"] == "AVX512_E4" and env["RAYON_NUM_THREADS"] == "8"
    probe = pm.run(
        "run", "--rm", "--entrypoint", "/bin/sh", base_image, "-c",
        "command -v python3 || echo no-python3; dpkg-query -W -f='${Package} ' libomp-dev curl libssl-dev",
    )  # fmt: skip
    assert "no-python3" in probe.stdout
    assert sorted(probe.stdout.split()[1:]) == ["curl", "libomp-dev", "libssl-dev"]
    assert probe.stderr == ""  # the LD_PRELOAD stub loads without complaint
