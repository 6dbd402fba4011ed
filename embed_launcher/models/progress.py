"""Download progress sinks: a rich bar on a terminal, periodic percentage lines for docker logs/journald."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TextIO

from embed_launcher.models.fileset import human_bytes

if TYPE_CHECKING:
    from rich.progress import TaskID

LINE_STEP_PERCENT = 10  # plain mode: one line per 10 % ...
LINE_EVERY_S = 5.0  # ... or every 5 s, whichever comes first


class Progress(Protocol):
    """Receives byte counts for one or more concurrent pulls, keyed by repo id. Must be thread-safe.

    ``advance`` may come for a repo before ``start`` (small files fetched to learn the total): ignore it.
    """

    def start(self, repo_id: str, total_bytes: int, done_bytes: int) -> None: ...

    def advance(self, repo_id: str, n_bytes: int) -> None: ...

    def finish(self, repo_id: str, completed: bool = True) -> None: ...


class NullProgress:
    """Shows nothing (tests, and pulls with nothing to download)."""

    def start(self, repo_id: str, total_bytes: int, done_bytes: int) -> None:
        pass

    def advance(self, repo_id: str, n_bytes: int) -> None:
        pass

    def finish(self, repo_id: str, completed: bool = True) -> None:
        pass


@dataclass
class _Count:
    total: int
    done: int
    last_percent: int
    last_line_s: float


class PlainProgress:
    """One line per step, e.g. ``Downloading BAAI/bge-m3: 42% (240 MB of 570 MB)``; no control codes."""

    def __init__(self, stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic,
                 say: Callable[[str], None] | None = None) -> None:
        self._stream = stream
        self._say = say  # instead of the stream: the console's info (EMBED_LOG_FORMAT=json wraps each line)
        self._clock = clock
        self._lock = threading.Lock()
        self._counts: dict[str, _Count] = {}

    def start(self, repo_id: str, total_bytes: int, done_bytes: int) -> None:
        with self._lock:
            count = _Count(total_bytes, done_bytes, self._percent(done_bytes, total_bytes), self._clock())
            self._counts[repo_id] = count
            self._emit(repo_id, count)

    def advance(self, repo_id: str, n_bytes: int) -> None:
        with self._lock:
            count = self._counts.get(repo_id)
            if count is None:  # bytes fetched before the total was known (index, modules.json)
                return
            count.done += n_bytes
            percent = self._percent(count.done, count.total)
            due = self._clock() - count.last_line_s >= LINE_EVERY_S
            if percent >= count.last_percent + LINE_STEP_PERCENT or (due and percent > count.last_percent):
                count.last_percent, count.last_line_s = percent, self._clock()
                self._emit(repo_id, count)

    def finish(self, repo_id: str, completed: bool = True) -> None:
        """The pull ended; only a completed one claims 100% (a stopped or failed one says nothing more)."""
        with self._lock:
            count = self._counts.pop(repo_id, None)
            if completed and count is not None and count.last_percent < 100:
                count.done = max(count.done, count.total)
                self._emit(repo_id, count)

    @staticmethod
    def _percent(done: int, total: int) -> int:
        return 100 if total <= 0 else min(100, done * 100 // total)

    def _emit(self, repo_id: str, count: _Count) -> None:
        percent = self._percent(count.done, count.total)
        line = f"Downloading {repo_id}: {percent}% ({human_bytes(count.done)} of {human_bytes(count.total)})"
        if self._say is not None:
            self._say(line)
            return
        stream = self._stream or sys.stdout
        stream.write(line + "\n")
        stream.flush()


class RichProgress:
    """A rich progress bar per repo on a terminal; the bar stops when the last pull finishes."""

    def __init__(self, stream: TextIO | None = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, TextColumn, TimeRemainingColumn, TransferSpeedColumn
        from rich.progress import Progress as RichBar

        columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
        self._bar = RichBar(*columns, TimeRemainingColumn(), console=Console(file=stream or sys.stdout))
        self._lock = threading.Lock()
        self._tasks: dict[str, tuple[TaskID, int]] = {}

    def start(self, repo_id: str, total_bytes: int, done_bytes: int) -> None:
        with self._lock:
            if not self._tasks:
                self._bar.start()
            task = self._bar.add_task(repo_id, total=total_bytes, completed=done_bytes)
            self._tasks[repo_id] = (task, total_bytes)

    def advance(self, repo_id: str, n_bytes: int) -> None:
        task = self._tasks.get(repo_id)
        if task is not None:
            self._bar.advance(task[0], n_bytes)

    def finish(self, repo_id: str, completed: bool = True) -> None:
        with self._lock:
            task = self._tasks.pop(repo_id, None)
            if task is not None and completed:
                self._bar.update(task[0], completed=task[1])
            if not self._tasks:
                self._bar.stop()


def default_progress(stream: TextIO | None = None) -> Progress:
    """Rich bar when ``stream`` (stdout by default) is a terminal, plain lines otherwise."""
    target = stream or sys.stdout
    return RichProgress(target) if target.isatty() else PlainProgress(target)
