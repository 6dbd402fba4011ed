"""embed_manage --alive: a liveness probe of the launcher itself (its process runs, its status stays fresh)."""

from __future__ import annotations

import time
from collections.abc import Mapping

from embed_launcher.datadir.directory import DataDir
from embed_launcher.manage.live import read_live
from embed_launcher.manage.location import data_dir
from embed_launcher.reporting.console import Console
from embed_launcher.reporting.errors import EXIT_OK, LauncherError


def show_alive(environ: Mapping[str, str], console: Console) -> int:
    """Exit 0 while the launcher runs and its loop keeps the live status fresh (a liveness probe).

    TEI children that are busy, restarting or still downloading do not matter: the launcher
    heals its children itself; only a launcher that is gone or stuck needs a restart from outside.
    """
    live = read_live(DataDir(data_dir(dict(environ))), time.time())
    if not live.alive:
        raise LauncherError("Error: the launcher is not running (no live process for this data directory).")
    if not live.fresh:
        age = "at an unknown time" if live.age_s is None else f"{live.age_s:.0f} s ago"
        raise LauncherError(
            f"Error: the launcher (pid {live.launcher_pid}) last updated its status {age}"
            f" (limit {live.stale_after_s:g} s): its loop is stuck."
        )
    console.info(f"alive: launcher pid {live.launcher_pid}, status updated {live.age_s:.0f} s ago")
    return EXIT_OK
