"""embed_manage --reload: SIGHUP to the running launcher, then wait for the reload's outcome in its live status."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Mapping

from embed_launcher.datadir.directory import DataDir
from embed_launcher.manage.live import LiveStatus, read_live
from embed_launcher.manage.location import data_dir
from embed_launcher.reporting.console import Console
from embed_launcher.reporting.errors import EXIT_FAILURE, EXIT_OK, LauncherError

DEFAULT_TIMEOUT_S = 900.0  # a reload downloads new models before it switches: minutes on a slow link
POLL_S = 0.1


def reload_seq(live: LiveStatus) -> int:
    record = live.raw.get("reload")
    seq = record.get("seq") if isinstance(record, dict) else None
    return seq if isinstance(seq, int) else 0


def outcome(live: LiveStatus, after: int) -> dict[str, object] | None:
    """The first finished reload record after sequence number ``after``, if there is one yet."""
    record = live.raw.get("reload")
    if not isinstance(record, dict) or reload_seq(live) <= after or record.get("state") not in ("ok", "failed"):
        return None
    return record


def reload(environ: Mapping[str, str], console: Console, *, timeout_s: float = DEFAULT_TIMEOUT_S,
           clock: Callable[[], float] = time.monotonic, kill: Callable[[int, int], None] = os.kill) -> int:
    """Ask the launcher to re-read its env file and models file; exit 0 once it serves the new configuration,
    1 with the reason when the reload failed (the previous configuration keeps serving) or took too long."""
    data = DataDir(data_dir(dict(environ)))
    live = read_live(data, time.time())
    pid = live.launcher_pid
    if not live.alive or not isinstance(pid, int):
        raise LauncherError("Error: the launcher is not running (no live process for this data directory);"
                            " nothing to reload.")
    before = reload_seq(live)
    try:
        kill(pid, signal.SIGHUP)
    except PermissionError:
        raise LauncherError(f"Error: not allowed to signal the launcher (pid {pid}); run embed_manage as its"
                            " user, or use `systemctl reload`.") from None
    except ProcessLookupError:
        raise LauncherError("Error: the launcher is not running; nothing to reload.") from None
    deadline = clock() + timeout_s
    while clock() < deadline:
        time.sleep(POLL_S)
        live = read_live(data, time.time())
        record = outcome(live, before)
        if record is not None:
            message = str(record.get("message", ""))
            if record.get("state") == "ok":
                console.info(f"Reload complete: {message}.")
                return EXIT_OK
            console.error(f"Reload failed: {message}; still serving the previous configuration")
            return EXIT_FAILURE
        if not live.alive:
            raise LauncherError("Error: the launcher stopped during the reload.")
    raise LauncherError(f"Error: no outcome of the reload within {timeout_s:g} s (--timeout); it may still be"
                        " downloading: see the launcher's log, or embed_manage --status.")
