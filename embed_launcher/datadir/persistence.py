"""Does the data directory outlive the process? Container detection and mount-table reading (pure)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

_MOUNT_ESCAPE = re.compile(r"\\([0-7]{3})")


def in_container(environ: Mapping[str, str],
                 exists: Callable[[str], bool] = os.path.exists) -> bool:
    """The original's container test: Docker or Podman marker files, or a Kubernetes pod."""
    if exists("/.dockerenv") or exists("/run/.containerenv"):
        return True
    return bool(environ.get("KUBERNETES_SERVICE_HOST"))


def _mount_points(mounts_text: str) -> set[str]:
    points = set()
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) >= 2:
            points.add(_MOUNT_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), fields[1]))
    return points


def is_persistent(data_dir: Path, *, in_container: bool, mounts_text: str) -> bool:
    """Whether data written to ``data_dir`` outlives the container (always, outside one).

    Inside a container it is persistent iff a mount point (from /proc/mounts text) is the
    directory or one of its parents other than "/" (the container's own root filesystem).
    """
    if not in_container:
        return True
    target = Path(os.path.normpath(data_dir))
    candidates = {str(p) for p in (target, *target.parents) if str(p) != "/"}
    return bool(candidates & {os.path.normpath(p) for p in _mount_points(mounts_text)})
