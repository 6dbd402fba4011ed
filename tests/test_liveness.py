"""Liveness judgement (pure): busy is not dead, failing too often or hung is replaced."""

from __future__ import annotations

import pytest

from embed_launcher.supervision.liveness import (
    Answer,
    Check,
    Health,
    Liveness,
    Progress,
    became_ready,
    judge,
    restart_reason,
)

HANG_S = 60.0


def busy(queue: float, *completed: float) -> Check:
    return Check(Answer.SILENT, Progress(queue, completed or (0.0,)))


def run(checks: list[tuple[float, Check]]) -> Liveness:
    state = became_ready(0.0)
    for now, check in checks:
        state = judge(state, check, now)
    return state


def reason(state: Liveness, now: float) -> str | None:
    return restart_reason(state, now, max_failures=3, hang_timeout_s=HANG_S)


def test_a_200_is_ready_and_clears_every_streak() -> None:
    """One good answer ends a failing streak and marks work as moving now."""
    state = run([(1, Check(Answer.FAILING)), (2, Check(Answer.FAILING)), (3, Check(Answer.OK))])
    assert state == Liveness(Health.READY, 0, 3.0, None)


def test_three_failing_checks_in_a_row_restart() -> None:
    """503, refused or reset: counted; the third in a row is a restart."""
    state = run([(t, Check(Answer.FAILING)) for t in (1, 2)])
    assert state.health is Health.UNHEALTHY and reason(state, 2) is None
    state = judge(state, Check(Answer.FAILING), 3)
    assert reason(state, 3) == "failed 3 health checks in a row"


def test_silent_health_with_silent_metrics_is_failing() -> None:
    """/metrics is served by the HTTP layer: when it does not answer either, nothing is serving."""
    state = run([(t, Check(Answer.SILENT, None)) for t in (1, 2, 3)])
    assert state.failures == 3 and reason(state, 3) is not None


def test_busy_while_work_completes_never_restarts() -> None:
    """Silent /health for far longer than the hang timeout, but counters move: never a restart."""
    checks = [(float(t), busy(5, float(t))) for t in range(10, 1000, 10)]
    state = run(checks)
    assert state.health is Health.BUSY and state.failures == 0
    assert reason(state, 999) is None


def test_a_moving_queue_is_progress_too() -> None:
    """Nothing completed yet, but the queue changed: the backend is taking work."""
    state = run([(10, busy(5)), (50, busy(4)), (100, busy(3))])
    assert state.last_progress_at == 100 and reason(state, 100) is None


def test_new_arrivals_are_not_progress() -> None:
    """A hung TEI under traffic: the queue only grows (new requests) and nothing completes -> hung at HANG_S."""
    state = run([(10, busy(1, 7)), (30, busy(4, 7)), (50, busy(9, 7))])
    assert state.last_progress_at == 0 and reason(state, 59) is None
    state = judge(state, busy(12, 7), 60)
    assert reason(state, 60) is not None


def test_a_growing_then_shrinking_queue_is_progress_when_it_shrinks() -> None:
    """The batching task took work off the queue: progress at that check, not at the arrivals before it."""
    state = run([(10, busy(1, 7)), (30, busy(6, 7)), (50, busy(2, 7))])
    assert state.last_progress_at == 50


def test_busy_with_frozen_counters_is_hung_after_the_timeout() -> None:
    """Silent /health and nothing moving since the last sign of life: hung at HANG_S, not before."""
    state = run([(10, busy(2, 7)), (30, busy(2, 7))])
    assert reason(state, 59) is None
    state = judge(state, busy(2, 7), 60)
    text = reason(state, 60)
    assert text is not None and text.startswith("is hung") and "queue 2" in text


def test_the_hang_clock_starts_at_the_last_sign_of_life() -> None:
    """Counters moved at t=100: a hang is judged from there, not from when busy began."""
    state = run([(10, busy(1, 1)), (100, busy(1, 2)), (150, busy(1, 2))])
    assert reason(state, 150) is None
    assert reason(judge(state, busy(1, 2), 160), 160) is not None


@pytest.mark.parametrize("first", [Check(Answer.FAILING), busy(1, 1)])
def test_busy_breaks_a_failing_streak_and_failing_ends_busy(first: Check) -> None:
    """A streak is "in a row": an answer of the other kind starts it over."""
    state = run([(1, first), (2, Check(Answer.FAILING)), (3, busy(1, 2)), (4, Check(Answer.FAILING))])
    assert state.failures == 1 and state.health is Health.UNHEALTHY
