"""When each key was last used, written best-effort by each gateway worker for `embed_manage --listkeys`.

Each worker keeps the times in memory (one dict write per request) and writes its own file,
``<state dir>/.key_use.<worker>.json`` (``{"id": epoch seconds}``), at most every WRITE_EVERY_S and
only when something changed: no file write on the request path, no lock between workers.
embed_manage merges the files (the latest time wins). A write that fails is logged once and the
gateway keeps serving: this is a convenience, not an audit log.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path

WRITE_EVERY_S = 10.0
PREFIX, SUFFIX = ".key_use.", ".json"
STATE_DIR_VAR = "EMBED_GATEWAY_STATE_DIR"
WORKER_VAR = "EMBED_GATEWAY_WORKER"


def use_file(state_dir: Path, worker: str) -> Path:
    return state_dir / f"{PREFIX}{worker}{SUFFIX}"


def read_uses(state_dir: Path) -> dict[str, float]:
    """Every worker's record merged: the latest use of each key id (unreadable files are skipped)."""
    merged: dict[str, float] = {}
    for path in sorted(state_dir.glob(f"{PREFIX}*{SUFFIX}")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            for key_id, when in data.items():
                if isinstance(when, int | float) and not isinstance(when, bool):
                    merged[key_id] = max(merged.get(key_id, 0.0), float(when))
    return merged


class UseRecord:
    """This worker's last-use times and their file."""

    def __init__(self, path: Path | None, say: Callable[[str], None]) -> None:
        self.path, self.say = path, say
        self.times: dict[str, float] = {}
        self.dirty = False
        self.written_at = float("-inf")
        self.failed = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], say: Callable[[str], None]) -> UseRecord:
        state_dir = environ.get(STATE_DIR_VAR)
        worker = environ.get(WORKER_VAR) or "0"
        return cls(use_file(Path(state_dir), worker) if state_dir else None, say)

    def used(self, key_id: str, wall: float) -> None:
        self.times[key_id] = wall
        self.dirty = True

    def flush(self, mono: float, force: bool = False) -> None:
        """Write when something changed and WRITE_EVERY_S passed (or ``force``, at stop)."""
        if self.path is None or not self.dirty or (not force and mono - self.written_at < WRITE_EVERY_S):
            return
        self.written_at, self.dirty = mono, False
        try:
            replace_file(self.path, json.dumps({k: round(v, 3) for k, v in sorted(self.times.items())}))
        except OSError as exc:
            if not self.failed:
                self.say(f"Warning: cannot record the keys' last use in {self.path} ({exc.strerror or exc});"
                         " embed_manage --listkeys will not show it. Serving goes on.")
            self.failed = True
        else:
            self.failed = False


def replace_file(path: Path, text: str) -> None:
    """datadir/atomic.py's recipe (the gateway imports nothing of the launcher but reporting): a temp
    file renamed over the old one, so a reader never sees half; no fsync, the record is worthless after a crash."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
