"""Best-effort publishing of the live status: a full or read-only data volume never stops the server."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

Status = Mapping[str, object]


class StatusPublisher:
    """Hands each live status to ``write``; a failed write is one warning per episode, never an exception.

    The status file only feeds `embed_manage --status/--alive`; the TEIs serve without it. So an
    ENOSPC or a read-only remount of the data volume must not end the supervisor (in a container
    its exit would SIGKILL every TEI): we warn once when writes start failing, keep serving and
    healing, and say so once when a write succeeds again.

        publish = StatusPublisher(data.write_status, data.status_path, console.warn, console.info)
        publish({"services": ...})      # True if written
    """

    def __init__(
        self,
        write: Callable[[Status], None],
        path: Path,
        warn: Callable[[str], None],
        info: Callable[[str], None] = lambda text: None,
    ) -> None:
        self.write, self.path, self.warn, self.info = write, path, warn, info
        self.failing = False  # inside an episode of failed writes

    def __call__(self, status: Status) -> bool:
        """Write ``status``; False (after at most one warning per episode) when the write failed."""
        try:
            self.write(status)
        except OSError as exc:
            if not self.failing:
                self.failing = True
                self.warn(f"Warning: cannot write {self.path} ({exc.strerror or exc}); serving continues")
            return False
        if self.failing:
            self.failing = False
            self.info(f"The live status is written to {self.path} again.")
        return True
