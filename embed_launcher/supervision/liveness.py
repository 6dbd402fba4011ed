"""Liveness (pure): is a ready TEI healthy, busy, failing or hung? Busy is not dead.

TEI answers `/health` on its single backend thread, queued behind the batch in progress, so under
load it may not answer for tens of seconds while the server is fine. `/metrics` is served by the
HTTP layer without the backend: when `/health` is silent, its counters tell a busy TEI (work still
completes, or the queue shrinks) from a hung one (nothing completes for `hang_timeout_s`, however many
requests keep arriving).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace


class Answer(enum.Enum):
    """What one `/health` request got."""

    OK = "ok"  # 200
    NOT_READY = "not-ready"  # another HTTP status (TEI: 503 unhealthy; the gateway: 503 until every TEI was up)
    FAILING = "failing"  # refused or reset while the process lives, a malformed answer
    SILENT = "silent"  # no answer in time


@dataclass(frozen=True)
class Progress:
    """The few `/metrics` values that show work moving."""

    queue_size: float
    completed: tuple[float, ...]  # counters that move when work completes (their order is fixed)


@dataclass(frozen=True)
class Check:
    """One liveness check: `/health`, and `/metrics` when `/health` was silent (None: it did not answer)."""

    answer: Answer
    progress: Progress | None = None


class Health(enum.Enum):
    """How a ready child is doing, as `embed_manage --status` shows it."""

    READY = "ready"
    BUSY = "busy"  # /health slow, work still moving
    UNHEALTHY = "unhealthy"  # the last check failed


@dataclass(frozen=True)
class Liveness:
    """A ready child's liveness record: drives the restart decision and the status."""

    health: Health = Health.READY
    failures: int = 0  # failing checks in a row
    last_progress_at: float = 0.0  # monotonic: the last 200 from /health, or work seen completing
    progress: Progress | None = None  # the last /metrics reading while busy

    def idle_s(self, now: float) -> float:
        """Seconds since work was last seen moving."""
        return max(0.0, now - self.last_progress_at)


def became_ready(now: float) -> Liveness:
    """A fresh record for a child that just answered /health."""
    return Liveness(last_progress_at=now)


def judge(state: Liveness, check: Check, now: float) -> Liveness:
    """Fold one check into the record."""
    if check.answer is Answer.OK:
        return became_ready(now)
    if check.answer in (Answer.FAILING, Answer.NOT_READY) or check.progress is None:
        # A silent /health and a silent /metrics: the HTTP layer itself is gone.
        return replace(state, health=Health.UNHEALTHY, failures=state.failures + 1, progress=None)
    moved = state.progress is not None and moved_on(state.progress, check.progress)
    return Liveness(
        health=Health.BUSY,
        failures=0,
        last_progress_at=now if moved else state.last_progress_at,
        progress=check.progress,
    )


def moved_on(before: Progress, after: Progress) -> bool:
    """Work completed (a counter went up), or the queue shrank (the backend took a batch).

    A growing queue is not progress: clients keep sending to a hung TEI, and its queue grows.
    TEI's /health is a backend command, not a queue entry, so our own checks never move the queue.
    """
    completed = any(a > b for a, b in zip(after.completed, before.completed, strict=True))
    return completed or after.queue_size < before.queue_size


def restart_reason(state: Liveness, now: float, *, max_failures: int, hang_timeout_s: float) -> str | None:
    """Why this child must be replaced now, or None while it may keep serving."""
    if state.failures >= max_failures:
        return f"failed {state.failures} health checks in a row"
    if state.health is Health.BUSY and state.idle_s(now) >= hang_timeout_s:
        queue = state.progress.queue_size if state.progress is not None else 0
        return (
            f"is hung: /health unanswered and no work completed for {state.idle_s(now):.0f} s"
            f" (queue {queue:g}, EMBED_HANG_TIMEOUT={hang_timeout_s:g})"
        )
    return None
