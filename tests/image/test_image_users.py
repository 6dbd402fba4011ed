"""Running unprivileged (new volume, or an old one after the README's chown) and on a read-only root."""

from __future__ import annotations

import pytest
from containers.podman import Podman

from image.launcher_container import DATA_DIR, BuiltImage, Starter

pytestmark = [pytest.mark.image, pytest.mark.timeout(1200)]

EMBED_USER = "10001:10001"
# What the Kubernetes manifests mount writable on a read-only root: TEI's --uds-path is under /tmp.
READ_ONLY = ("--read-only", "--read-only-tmpfs=false", "--tmpfs", "/tmp")


def test_unprivileged_on_a_new_volume(pm: Podman, start: Starter) -> None:
    """--user 10001:10001 with a new volume: the volume takes the image's ownership; all works."""
    container = start(pm.volume("data"), options=["--user", EMBED_USER])
    container.wait_healthy()
    assert container.exec("id", "-u").strip() == "10001"
    key = container.getkey()
    assert container.embed(key) == 200


def test_readme_chown_recipe_moves_an_old_volume_to_the_embed_user(
    pm: Podman, start: Starter, launcher_image: BuiltImage
) -> None:
    """A volume written as root serves as 10001 after the README's chown, with the same key."""
    volume = pm.volume("data")
    as_root = start(volume)
    as_root.wait_healthy()
    key = as_root.getkey()
    as_root.stop()
    pm.run("run", "--rm", "-v", f"{volume}:{DATA_DIR}", "--entrypoint", "chown", launcher_image.tag,
           "-R", "10001:10001", DATA_DIR)  # fmt: skip
    unprivileged = start(volume, options=["--user", EMBED_USER])
    unprivileged.wait_healthy()
    assert unprivileged.getkey() == key
    assert unprivileged.embed(key) == 200


@pytest.mark.parametrize("user", [None, EMBED_USER], ids=["root", "embed"])
def test_read_only_root_with_writable_tmp_and_data(pm: Podman, start: Starter, user: str | None) -> None:
    """A read-only root filesystem needs only /tmp and the data dir writable."""
    options = [*READ_ONLY, *(["--user", user] if user else [])]
    container = start(pm.volume("data"), options=options)
    container.wait_healthy()
    key = container.getkey()
    assert container.embed(key) == 200
    assert container.stop() < 1.0
    assert container.state("{{.State.ExitCode}}") == "0"
