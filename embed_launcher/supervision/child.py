"""The supervisor's records: its timing numbers, and what it knows of each child."""

from __future__ import annotations

from dataclasses import dataclass, field

from embed_launcher.supervision.liveness import Liveness
from embed_launcher.supervision.plan import ChildSpec
from embed_launcher.supervision.policy import ChildState, RestartPolicy
from embed_launcher.supervision.process import Handle

STARTUP_POLL_S = 0.1  # /health while starting; the "Ready" log line triggers an earlier probe
CRASH = "crash"  # a restart's reason when the process ended on its own
KILL_REASONS = ("unhealthy", "hung", "start_timeout")  # when the launcher killed it: failed checks, hung, not ready


@dataclass(frozen=True)
class Timing:
    """The supervisor's clock-driven numbers, all in seconds."""

    ready_timeout_s: float = 600.0
    stop_timeout_s: float = 8.0
    health_interval_s: float = 10.0
    health_timeout_s: float = 5.0
    health_failures: int = 3
    hang_timeout_s: float = 600.0
    startup_poll_s: float = STARTUP_POLL_S
    policy: RestartPolicy = field(default_factory=RestartPolicy)


DEFAULT_TIMING = Timing()


@dataclass
class Child:
    """The supervisor's record of one service: its spec, its policy state and its live process."""

    spec: ChildSpec
    state: ChildState = field(default_factory=ChildState)
    handle: Handle | None = None
    generation: int = 0  # bumped per process, so a late probe result of a dead one is ignored
    probing: bool = False
    next_probe_at: float = 0.0
    liveness: Liveness = field(default_factory=Liveness)
    killing: bool = False  # we sent SIGKILL (ready timeout, liveness) and await the exit
    last_exit: str | None = None
    oom_streak: int = 0  # consecutive exits with CUDA out of memory
    abandoned: bool = False  # given up while its sibling replicas serve: never restarted
    # Why the launcher killed it (KILL_REASONS), while `killing`; an exit on its own is a crash.
    kill_reason: str = ""
    exit_reason: str = CRASH  # why the last process ended: what its restart is counted under
    restarts_by_reason: dict[str, int] = field(default_factory=dict)  # the status's (and /metrics') breakdown

    def killed_for(self, reason: str) -> None:
        """We SIGKILL it for ``reason`` (one of KILL_REASONS): its exit counts as that, not as a crash."""
        self.killing, self.kill_reason = True, reason

    def spawned(self, before: int) -> None:
        """A process was started; a restart (the policy's count went up from ``before``) is counted by reason."""
        if self.state.restarts > before:
            self.restarts_by_reason[self.exit_reason] = self.restarts_by_reason.get(self.exit_reason, 0) + 1
    config_generation: int = 1  # the configuration (reload) it belongs to
    retired: bool = False  # a reload stops it (replaced, removed, or a failed reload's new TEI): never restarted
