"""Restart policy: a per-child state machine with backoff and a crash-loop brake (pure; time is an argument)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace


class Phase(enum.Enum):
    """supervisord's names for where a child is in its life."""

    STOPPED = "stopped"  # never started
    STARTING = "starting"  # spawned, /health not yet 200
    RUNNING = "running"  # ready and serving
    BACKOFF = "backoff"  # died; waiting to be started again
    STOPPING = "stopping"  # we asked it to stop
    EXITED = "exited"  # stopped on request
    FATAL = "fatal"  # gave up: too many failed starts, or a configuration error


@dataclass(frozen=True)
class RestartPolicy:
    """The numbers behind restarts (design §4.5; reliability §3)."""

    initial_delay_s: float = 1.0
    max_delay_s: float = 60.0
    # A child that served this long before dying was unlucky (an OOM kill by one huge batch), not
    # in a crash loop: it is restarted at initial_delay_s, and its backoff starts over.
    reset_after_s: float = 60.0
    max_start_failures: int = 5  # consecutive starts that never became ready, then FATAL

    def delay_s(self, attempt: int) -> float:
        """Backoff before restart number ``attempt`` (0-based) of a streak: 1, 2, 4, ... capped."""
        return float(min(self.max_delay_s, self.initial_delay_s * (2 ** min(attempt, 32))))


@dataclass(frozen=True)
class ChildState:
    """Where one child is, and the counters that drive its next restart."""

    phase: Phase = Phase.STOPPED
    since: float = 0.0  # monotonic time the child entered this phase
    attempt: int = 0  # restarts in the current streak; picks the next delay
    start_failures: int = 0  # consecutive starts that died before becoming ready
    restarts: int = 0  # total restarts, for status and logs
    restart_at: float | None = None  # when BACKOFF ends


def spawned(state: ChildState, now: float) -> ChildState:
    """A process was started for the child."""
    restarts = state.restarts + (1 if state.phase is Phase.BACKOFF else 0)
    return replace(state, phase=Phase.STARTING, since=now, restart_at=None, restarts=restarts)


def became_ready(state: ChildState, now: float) -> ChildState:
    """/health answered 200: the start succeeded, so the start-failure streak ends."""
    return replace(state, phase=Phase.RUNNING, since=now, start_failures=0)


def stopping(state: ChildState, now: float) -> ChildState:
    """We asked the child to stop; its exit will not be restarted."""
    if state.phase in (Phase.BACKOFF, Phase.STOPPED):
        return replace(state, phase=Phase.EXITED, since=now, restart_at=None)
    if state.phase in (Phase.EXITED, Phase.FATAL):
        return state
    return replace(state, phase=Phase.STOPPING, since=now)


def exited(state: ChildState, now: float, policy: RestartPolicy, *, fatal: bool = False) -> ChildState:
    """The child's process ended. Decide: stay down, give up, or restart after a delay.

    ``fatal`` marks an exit that retrying cannot fix (TEI's exit 2: it rejected its arguments).
    """
    if state.phase is Phase.STOPPING:
        return replace(state, phase=Phase.EXITED, since=now)
    if fatal:
        return replace(state, phase=Phase.FATAL, since=now)
    start_failures = state.start_failures
    attempt = state.attempt
    if state.phase is Phase.STARTING:
        start_failures += 1
        if start_failures >= policy.max_start_failures:
            return replace(state, phase=Phase.FATAL, since=now, start_failures=start_failures)
    elif state.phase is Phase.RUNNING and now - state.since >= policy.reset_after_s:
        attempt = 0
    delay = policy.delay_s(attempt)
    return replace(
        state,
        phase=Phase.BACKOFF,
        since=now,
        attempt=attempt + 1,
        start_failures=start_failures,
        restart_at=now + delay,
    )


def restart_due(state: ChildState, now: float) -> bool:
    """Whether a child in BACKOFF should be started again now."""
    return state.phase is Phase.BACKOFF and state.restart_at is not None and now >= state.restart_at
