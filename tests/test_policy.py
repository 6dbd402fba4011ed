"""Restart policy: backoff sequence, reset after a healthy stretch, crash-loop brake (fake clock: plain numbers)."""

from __future__ import annotations

import pytest

from embed_launcher.supervision import policy
from embed_launcher.supervision.policy import ChildState, Phase, RestartPolicy

POLICY = RestartPolicy(initial_delay_s=1.0, max_delay_s=60.0, reset_after_s=600.0, max_start_failures=5)


def crash_after_ready(state: ChildState, now: float, ran_for: float) -> ChildState:
    """Spawn at ``now``, become ready at once, crash ``ran_for`` seconds later."""
    state = policy.became_ready(policy.spawned(state, now), now)
    return policy.exited(state, now + ran_for, POLICY)


@pytest.mark.parametrize(
    ("attempt", "delay"),
    [(0, 1.0), (1, 2.0), (2, 4.0), (3, 8.0), (5, 32.0), (6, 60.0), (40, 60.0)],
)
def test_delay_doubles_from_one_second_up_to_the_cap(attempt: int, delay: float) -> None:
    """Backoff is 1 s doubling, capped at 60 s (Docker's cap)."""
    assert POLICY.delay_s(attempt) == delay


def test_crashes_after_ready_back_off_exponentially() -> None:
    """Each crash of a ready child restarts it later than the last: 1, 2, 4, 8 s."""
    state, now, delays = ChildState(), 0.0, []
    for _ in range(4):
        state = crash_after_ready(state, now, ran_for=5.0)
        assert state.phase is Phase.BACKOFF
        assert state.restart_at is not None
        delays.append(state.restart_at - state.since)
        now = state.restart_at
    assert delays == [1.0, 2.0, 4.0, 8.0]


def test_backoff_resets_after_ten_healthy_minutes() -> None:
    """A child that served for the reset window restarts after 1 s again."""
    state = ChildState()
    for _ in range(4):
        state = crash_after_ready(state, 0.0, ran_for=5.0)
    state = crash_after_ready(state, 100.0, ran_for=600.0)
    assert state.restart_at == pytest.approx(700.0 + 1.0)


def test_restart_is_not_due_before_the_delay() -> None:
    """A child in backoff is not restarted early, and is restarted once the delay has passed."""
    state = crash_after_ready(ChildState(), 0.0, ran_for=3.0)
    assert not policy.restart_due(state, 3.5)
    assert policy.restart_due(state, 4.0)


def test_five_failed_starts_in_a_row_are_fatal() -> None:
    """A child that never becomes ready is retried 1, 2, 4, 8 s apart, then given up on."""
    state, now, delays = ChildState(), 0.0, []
    for _ in range(4):
        state = policy.exited(policy.spawned(state, now), now + 0.5, POLICY)
        assert state.phase is Phase.BACKOFF
        assert state.restart_at is not None
        delays.append(state.restart_at - state.since)
        now = state.restart_at
    state = policy.exited(policy.spawned(state, now), now + 0.5, POLICY)
    assert delays == [1.0, 2.0, 4.0, 8.0]
    assert state.phase is Phase.FATAL
    assert state.start_failures == 5


def test_becoming_ready_ends_the_start_failure_streak() -> None:
    """Failed starts followed by a good one do not count towards the brake later."""
    state = ChildState()
    for _ in range(4):
        state = policy.exited(policy.spawned(state, 0.0), 1.0, POLICY)
    state = policy.became_ready(policy.spawned(state, 2.0), 3.0)
    assert state.start_failures == 0
    state = policy.exited(state, 4.0, POLICY)
    assert state.phase is Phase.BACKOFF


def test_a_fatal_exit_gives_up_at_once() -> None:
    """An exit retrying cannot fix (TEI rejected its arguments) is FATAL on the first try."""
    state = policy.exited(policy.spawned(ChildState(), 0.0), 0.1, POLICY, fatal=True)
    assert state.phase is Phase.FATAL


@pytest.mark.parametrize("phase_before", [Phase.STARTING, Phase.RUNNING])
def test_exit_after_a_stop_request_is_not_restarted(phase_before: Phase) -> None:
    """Once we asked a child to stop, its exit ends it: no backoff, no restart."""
    state = policy.spawned(ChildState(), 0.0)
    if phase_before is Phase.RUNNING:
        state = policy.became_ready(state, 1.0)
    state = policy.exited(policy.stopping(state, 2.0), 2.5, POLICY)
    assert state.phase is Phase.EXITED
    assert state.restart_at is None


def test_stop_during_backoff_cancels_the_restart() -> None:
    """A pending restart is dropped when a stop arrives during the backoff (matrix row 13)."""
    state = crash_after_ready(ChildState(), 0.0, ran_for=1.0)
    state = policy.stopping(state, 1.5)
    assert state.phase is Phase.EXITED
    assert not policy.restart_due(state, 100.0)


def test_restarts_are_counted_per_respawn() -> None:
    """The restart counter grows with each respawn after a crash, not with the first start."""
    state = policy.spawned(ChildState(), 0.0)
    assert state.restarts == 0
    state = policy.spawned(policy.exited(policy.became_ready(state, 1.0), 2.0, POLICY), 3.0)
    assert state.restarts == 1


def test_time_going_backwards_never_makes_a_restart_early() -> None:
    """Deadlines are monotonic-clock numbers: a jump of the wall clock cannot reach them (row 31)."""
    state = crash_after_ready(ChildState(), 1000.0, ran_for=1.0)
    assert not policy.restart_due(state, 500.0)


@pytest.mark.parametrize(
    ("served_s", "delays"),
    [
        (61.0, [1.0, 1.0, 1.0, 1.0, 1.0]),  # served a minute each time: bad luck, never punished
        (30.0, [1.0, 2.0, 4.0, 8.0, 16.0]),  # died soon after ready each time: a loop, backed off
    ],
)
def test_by_default_a_child_that_served_a_minute_restarts_at_the_base_delay(
    served_s: float, delays: list[float]
) -> None:
    """The default reset window is 60 s (EMBED_BACKOFF_RESET_AFTER): an OOM kill every few minutes costs 1 s each."""
    default = RestartPolicy()
    assert default.reset_after_s == 60.0
    state, now, seen = ChildState(), 0.0, []
    for _ in range(5):
        state = policy.became_ready(policy.spawned(state, now), now)
        state = policy.exited(state, now + served_s, default)
        assert state.restart_at is not None
        seen.append(state.restart_at - state.since)
        now = state.restart_at
    assert seen == delays
