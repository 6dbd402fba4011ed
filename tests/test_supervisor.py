"""The supervisor loop, driven by scripted event histories: fake clock, spawner and reaper; no processes."""

from __future__ import annotations

import collections
import errno
import io
import json
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from embed_launcher.datadir.directory import DataDir
from embed_launcher.reporting.console import Console
from embed_launcher.supervision.child import Child, Timing
from embed_launcher.supervision.events import Event, Mailbox, ProbeAnswered
from embed_launcher.supervision.liveness import Answer, Check, Progress
from embed_launcher.supervision.plan import ChildSpec
from embed_launcher.supervision.policy import Phase, RestartPolicy
from embed_launcher.supervision.process import Handle
from embed_launcher.supervision.publish import StatusPublisher
from embed_launcher.supervision.status import HEARTBEAT_S
from embed_launcher.supervision.supervisor import Supervisor

OK = Check(Answer.OK)
FAILING = Check(Answer.FAILING)


@dataclass
class FakeHandle:
    pid: int
    tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=20))


class FakeSpawner:
    """Records spawns and signals; pids count up from 100."""

    def __init__(self) -> None:
        self.spawned: list[tuple[str, int]] = []
        self.signals: list[tuple[int, int]] = []
        self.next_pid = 100

    def spawn(self, spec: ChildSpec) -> FakeHandle:
        self.next_pid += 1
        self.spawned.append((spec.name, self.next_pid))
        return FakeHandle(self.next_pid, collections.deque(["Error: Could not create backend"], maxlen=20))

    def signal(self, child: Handle, sig: int) -> None:
        self.signals.append((child.pid, sig))


class FakeNotifier:
    watchdog_interval_s: float | None = None

    def __init__(self) -> None:
        self.sent: list[str] = []

    def ready(self, status: str) -> None:
        self.sent.append("READY=1")

    def status(self, text: str) -> None:
        self.sent.append(f"STATUS={text}")

    def extend_timeout(self, seconds: float) -> None:
        self.sent.append(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")

    def stopping(self) -> None:
        self.sent.append("STOPPING=1")

    def watchdog(self) -> None:
        self.sent.append("WATCHDOG=1")


class Harness:
    """A supervisor with fakes; ``now`` is the fake monotonic clock."""

    def __init__(self, names: tuple[str, ...] = ("embed", "rerank"), **timing: object) -> None:
        self.now = 0.0
        self.spawner = FakeSpawner()
        self.notifier = FakeNotifier()
        self.out, self.err = io.StringIO(), io.StringIO()
        self.exits: list[tuple[int, int]] = []
        specs = [
            ChildSpec(name=n, label={"embed": "Embeddings", "rerank": "Reranker"}.get(n, "Gateway"), model="m",
                      argv=("tei",), env={}, port=8000 + i, health_url=f"http://127.0.0.1:{8000 + i}/health",
                      kind="gateway" if n == "gateway" else "embed")
            for i, n in enumerate(names)
        ]  # fmt: skip
        base: dict[str, Any] = dict(ready_timeout_s=30.0, stop_timeout_s=8.0, health_interval_s=10.0, health_failures=3)
        base.update(timing)
        self.sup = Supervisor(
            specs,
            console=Console(self.out, self.err, colour=False),
            spawner=self.spawner,
            timing=Timing(**base),
            probe=lambda url, timeout: Answer.FAILING,
            clock=lambda: self.now,
            notifier=self.notifier,
            banner=lambda: ["BANNER"],
            reaper=self.reap,
        )

    def reap(self) -> list[tuple[int, int]]:
        exits, self.exits = self.exits, []
        return exits

    def pid(self, name: str) -> int:
        handle = self.sup.child_named(name).handle
        assert handle is not None
        return handle.pid

    def ready(self, name: str) -> None:
        child = self.sup.child_named(name)
        self.sup.handle_probe(name, child.generation, OK)

    def exit(self, name: str, code: int) -> None:
        self.exits.append((self.pid(name), code))
        self.sup.reap_children()

    def at(self, t: float) -> None:
        self.now = t
        self.sup.tick(t)

    def phase(self, name: str) -> Phase:
        return self.sup.child_named(name).state.phase


@pytest.fixture
def h() -> Harness:
    harness = Harness()
    harness.sup.start_all(0.0)
    return harness


def test_banner_and_ready_notification_only_once_every_service_is_ready(h: Harness) -> None:
    """The ready banner waits for both services, then is printed once; systemd hears READY=1 once."""
    h.ready("embed")
    assert "BANNER" not in h.out.getvalue()
    h.ready("rerank")
    assert h.out.getvalue().count("BANNER") == 1
    assert h.notifier.sent.count("READY=1") == 1


def test_a_crashed_child_restarts_after_one_second_and_its_sibling_is_untouched(h: Harness) -> None:
    """Matrix row 1: exit 1 after ready -> logged, restarted at +1 s, the other child not signalled."""
    h.ready("embed")
    h.ready("rerank")
    rerank_pid = h.pid("rerank")
    h.now = 50.0
    h.exit("embed", 1)
    assert "Embeddings server exited unexpectedly (exit 1)" in h.err.getvalue()
    h.at(50.9)
    assert len(h.spawner.spawned) == 2
    h.at(51.0)
    assert h.spawner.spawned[-1][0] == "embed"
    assert all(pid != rerank_pid for pid, _ in h.spawner.signals)
    h.ready("embed")
    assert "Embeddings server is ready again (restart 1)." in h.out.getvalue()


def test_sigkill_death_is_reported_as_possible_oom(h: Harness) -> None:
    """Matrix row 2: a SIGKILLed child is described with the OOM hint."""
    h.ready("embed")
    h.ready("rerank")
    h.exit("rerank", -signal.SIGKILL)
    assert "signal SIGKILL (137), possibly out of memory" in h.err.getvalue()


def test_crash_loop_gives_up_after_five_failed_starts_and_stops_the_sibling(h: Harness) -> None:
    """Matrix row 3: failed starts back off 1, 2, 4, 8 s; the fifth is fatal: stop all, exit 1, last words shown."""
    h.ready("rerank")
    for _ in range(4):
        h.exit("embed", 1)
        restart_at = h.sup.child_named("embed").state.restart_at
        assert restart_at is not None
        h.at(restart_at)
    h.exit("embed", 1)
    assert h.phase("embed") is Phase.FATAL
    assert h.sup.stopping and h.sup.exit_code == 1
    assert (h.pid("rerank"), signal.SIGTERM) in h.spawner.signals
    assert "failed to start 5 times in a row; giving up" in h.err.getvalue()
    assert "Error: Could not create backend" in h.err.getvalue()
    assert [n for n, _ in h.spawner.spawned].count("embed") == 5


def test_tei_rejecting_its_arguments_is_a_configuration_error(h: Harness) -> None:
    """Exit 2 before ready (clap) is not retried; the launcher exits 2."""
    h.exit("embed", 2)
    assert h.phase("embed") is Phase.FATAL
    assert h.sup.exit_code == 2
    assert [n for n, _ in h.spawner.spawned].count("embed") == 1


def test_sigterm_stops_gracefully_and_a_second_signal_kills(h: Harness) -> None:
    """Matrix rows 11-12: first signal TERMs every group; the second KILLs at once and exits 1."""
    h.ready("embed")
    h.ready("rerank")
    h.sup.handle_signal(signal.SIGTERM)
    pids = {h.pid("embed"), h.pid("rerank")}
    assert {(p, signal.SIGTERM) for p in pids} <= set(h.spawner.signals)
    assert h.sup.exit_code == 0 and "STOPPING=1" in h.notifier.sent
    h.sup.handle_signal(signal.SIGINT)
    assert {(p, signal.SIGKILL) for p in pids} <= set(h.spawner.signals)
    assert h.sup.exit_code == 1


def test_sighup_is_passed_to_the_gateway_and_stops_nothing() -> None:
    """systemctl reload (ExecReload= sends SIGHUP): the gateway re-reads the keys file; no child stops."""
    h = Harness(("embed", "gateway"))
    h.sup.start_all(0.0)
    h.ready("embed")
    h.ready("gateway")
    h.sup.handle_signal(signal.SIGHUP)
    h.sup.handle_signal(signal.SIGHUP)
    assert h.spawner.signals == [(h.pid("gateway"), signal.SIGHUP)] * 2
    assert not h.sup.stopping and h.sup.exit_code == 0
    assert "the gateway re-reads the keys file" in h.out.getvalue()
    h.sup.handle_signal(signal.SIGTERM)  # a later stop is still the first stop: graceful, exit 0
    assert h.sup.exit_code == 0 and (h.pid("embed"), signal.SIGTERM) in h.spawner.signals
    assert not any(sig == signal.SIGKILL for _, sig in h.spawner.signals)


def test_sighup_without_a_gateway_is_only_noted(h: Harness) -> None:
    h.sup.handle_signal(signal.SIGHUP)
    assert h.spawner.signals == [] and not h.sup.stopping
    assert "nothing to reload" in h.out.getvalue()


def test_children_that_ignore_sigterm_are_killed_at_the_stop_deadline(h: Harness) -> None:
    """Matrix row 14: nothing more before the stop timeout; SIGKILL to each group at it."""
    h.sup.handle_signal(signal.SIGTERM)
    h.at(7.9)
    assert not any(sig == signal.SIGKILL for _, sig in h.spawner.signals)
    h.at(8.0)
    assert {(h.pid("embed"), signal.SIGKILL), (h.pid("rerank"), signal.SIGKILL)} <= set(h.spawner.signals)


def test_clean_stop_exits_zero_once_every_child_is_reaped(h: Harness) -> None:
    """The loop finishes only when no child process is left."""
    h.sup.handle_signal(signal.SIGTERM)
    h.exit("embed", 0)
    assert not h.sup.finished()
    h.exit("rerank", 0)
    assert h.sup.finished() and h.sup.exit_code == 0


def test_stop_during_backoff_spawns_nothing_more(h: Harness) -> None:
    """Matrix row 13: a pending restart is cancelled by a stop signal."""
    h.ready("embed")
    h.ready("rerank")
    h.exit("embed", 1)
    h.sup.handle_signal(signal.SIGTERM)
    h.at(100.0)
    assert len(h.spawner.spawned) == 2


def test_never_ready_child_is_killed_at_the_ready_timeout(h: Harness) -> None:
    """Matrix row 5: alive but never healthy -> message, SIGKILL, counted as a failed start."""
    pid = h.pid("embed")
    h.at(29.9)
    assert (pid, signal.SIGKILL) not in h.spawner.signals
    h.at(30.0)
    assert (pid, signal.SIGKILL) in h.spawner.signals
    assert "did not become ready within 30 seconds" in h.err.getvalue()
    h.exit("embed", -signal.SIGKILL)
    assert h.sup.child_named("embed").state.start_failures == 1


def test_three_failed_liveness_probes_restart_only_that_child(h: Harness) -> None:
    """Matrix row 19: consecutive /health failures after ready -> SIGKILL that child, then a restart."""
    h.ready("embed")
    h.ready("rerank")
    child = h.sup.child_named("embed")
    for _ in range(2):
        h.sup.handle_probe("embed", child.generation, FAILING)
    assert not h.spawner.signals
    h.sup.handle_probe("embed", child.generation, FAILING)
    assert h.spawner.signals == [(h.pid("embed"), signal.SIGKILL)]
    h.exit("embed", -signal.SIGKILL)
    assert h.phase("embed") is Phase.BACKOFF and h.phase("rerank") is Phase.RUNNING


def test_a_late_probe_answer_from_a_dead_process_is_ignored(h: Harness) -> None:
    """A probe result carries its process generation; an old one cannot mark a new process ready."""
    old = h.sup.child_named("embed").generation
    h.exit("embed", 1)
    h.at(1.0)
    h.sup.handle_probe("embed", old, OK)
    assert h.phase("embed") is Phase.STARTING


def test_both_children_crashing_at_once_restart_independently(h: Harness) -> None:
    """Matrix row 20: two exits in one turn -> one respawn each, no double spawn."""
    h.ready("embed")
    h.ready("rerank")
    h.exits = [(h.pid("embed"), 1), (h.pid("rerank"), 1)]
    h.sup.reap_children()
    h.at(1.0)
    h.at(1.0)
    assert sorted(n for n, _ in h.spawner.spawned[2:]) == ["embed", "rerank"]


def test_reaped_orphans_are_not_mistaken_for_children(h: Harness) -> None:
    """As PID 1 we reap strangers too; their exits change nothing (matrix row 17)."""
    h.exits = [(99999, 0)]
    h.sup.reap_children()
    assert h.phase("embed") is Phase.STARTING and h.phase("rerank") is Phase.STARTING


def test_watchdog_is_fed_while_the_loop_runs() -> None:
    """With WatchdogSec set, WATCHDOG=1 goes out every half interval from the loop."""
    h = Harness(names=("embed",))
    h.notifier.watchdog_interval_s = 5.0
    h.sup.start_all(0.0)
    for t in (5.0, 6.0, 10.0):
        h.at(t)
    assert h.notifier.sent.count("WATCHDOG=1") == 2


def test_restart_backoff_uses_the_configured_policy() -> None:
    """Scaled-down delays (for tests and impatient users) come from the Timing's policy."""
    h = Harness(names=("embed",), policy=RestartPolicy(initial_delay_s=0.2, max_delay_s=1.0))
    h.sup.start_all(0.0)
    h.ready("embed")
    h.exit("embed", 1)
    assert h.sup.child_named("embed").state.restart_at == pytest.approx(0.2)


def test_a_probe_that_raises_counts_as_unhealthy() -> None:
    """A broken probe (any exception) is a failed health check, delivered through the mailbox."""
    h = Harness(names=("embed",))

    def broken(url: str, timeout: float) -> Answer:
        raise RuntimeError("boom")

    h.sup.probe = broken
    h.sup.start_all(0.0)
    child = h.sup.child_named("embed")
    h.sup.start_probe(child)
    events: list[Event] = []
    deadline = time.monotonic() + 5
    while not events and time.monotonic() < deadline:
        h.sup.mailbox.wait(0.1)
        events = [e for e in h.sup.mailbox.drain() if isinstance(e, ProbeAnswered)]
    assert events == [ProbeAnswered("embed", child.generation, FAILING)]


def test_a_busy_child_is_never_restarted_while_work_completes() -> None:
    """Matrix: /health silent for ten intervals, counters moving -> no signal, status says busy."""
    published: list[Mapping[str, object]] = []
    h = Harness(names=("embed",), hang_timeout_s=15.0)
    h.sup.status_sink = published.append
    h.sup.start_all(0.0)
    h.ready("embed")
    child = h.sup.child_named("embed")
    for i in range(1, 11):
        h.now = 10.0 * i
        h.sup.handle_probe("embed", child.generation, Check(Answer.SILENT, Progress(3, (float(i),))))
    assert h.spawner.signals == []
    service = published[-1]["services"]["embed"]  # type: ignore[index]
    assert service["state"] == "running" and service["health"] == "busy" and service["queue_size"] == 3
    assert "embeddings: busy" in h.notifier.sent[-1]


def test_a_hung_child_is_replaced_after_the_hang_timeout() -> None:
    """Silent /health, frozen counters: SIGKILL once the hang timeout has passed since the last progress."""
    h = Harness(names=("embed",), hang_timeout_s=15.0)
    h.sup.start_all(0.0)
    h.now = 1.0
    h.ready("embed")
    child = h.sup.child_named("embed")
    frozen = Check(Answer.SILENT, Progress(2, (5.0,)))
    for t in (11.0, 15.0):
        h.now = t
        h.sup.handle_probe("embed", child.generation, frozen)
    assert h.spawner.signals == []
    h.now = 16.0
    h.sup.handle_probe("embed", child.generation, frozen)
    assert h.spawner.signals == [(h.pid("embed"), signal.SIGKILL)]
    assert "server is hung" in h.err.getvalue()


def test_restarts_are_counted_by_reason_in_the_live_status() -> None:
    """The status (and the gateway's embed_replica_restarts_total) tells a crash from a kill for failed checks,
    a hang or a start that never became ready; a restart is counted when it happens, not at the exit."""
    published: list[Mapping[str, Any]] = []
    h = Harness(names=("embed",), hang_timeout_s=15.0, ready_timeout_s=30.0)
    h.sup.status_sink = published.append
    h.sup.start_all(0.0)

    def reasons() -> dict[str, int]:
        return dict(published[-1]["services"]["embed"]["restarts_by_reason"])

    def restart_at(t: float) -> None:
        h.at(t)
        assert h.phase("embed") is Phase.STARTING

    h.ready("embed")
    h.now = 100.0
    h.exit("embed", 1)  # crash
    assert reasons() == {}  # not restarted yet
    restart_at(101.0)
    assert reasons() == {"crash": 1}
    h.ready("embed")
    child = h.sup.child_named("embed")
    for _ in range(3):
        h.sup.handle_probe("embed", child.generation, FAILING)
    h.exit("embed", -signal.SIGKILL)  # unhealthy
    restart_at(h.now + 2.0)
    h.ready("embed")
    frozen = Check(Answer.SILENT, Progress(2, (5.0,)))
    for t in (h.now + 10.0, h.now + 20.0):
        h.now = t
        h.sup.handle_probe("embed", child.generation, frozen)
    h.exit("embed", -signal.SIGKILL)  # hung
    restart_at(h.now + 4.0)
    h.at(h.now + 30.0)  # never ready
    h.exit("embed", -signal.SIGKILL)  # start_timeout
    restart_at(h.now + 8.0)
    assert reasons() == {"crash": 1, "unhealthy": 1, "hung": 1, "start_timeout": 1}
    assert published[-1]["services"]["embed"]["restarts"] == 4


def test_the_live_status_is_republished_as_a_heartbeat() -> None:
    """Even with nothing changing, the status is rewritten every HEARTBEAT_S (embed_manage --alive reads it)."""
    published: list[Mapping[str, object]] = []
    h = Harness(names=("embed",))
    h.sup.status_sink = published.append
    h.sup.start_all(0.0)
    h.ready("embed")
    before = len(published)
    for t in (1.0, 2.0, HEARTBEAT_S + 0.5, HEARTBEAT_S + 1.0, 2 * HEARTBEAT_S + 1.0):
        h.at(t)
    assert len(published) - before == 2
    assert published[-1]["heartbeat_s"] == HEARTBEAT_S


# -- a full or read-only data volume (the live status is best-effort) -----------------------------


class FlakyWriter:
    """A DataDir writer that fails with ``error`` (an errno) while set, like a full or read-only volume."""

    def __init__(self) -> None:
        self.error: int | None = None
        self.written: list[str] = []

    def __call__(self, path: Path, data: str, mode: int, *, durable: bool = True) -> None:
        if self.error is not None:
            raise OSError(self.error, os.strerror(self.error), str(path.with_name(".tmp")))
        self.written.append(data)


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EROFS])
def test_a_failing_status_write_is_one_warning_and_crashed_children_are_still_healed(
    tmp_path: Path, error: int
) -> None:
    """ENOSPC/EROFS on .status.json: one warning naming the real path, the loop goes on, a crash is healed,
    and the status file resumes (with one line saying so) once writes work again."""
    writer = FlakyWriter()
    data = DataDir(tmp_path, writer=writer)
    h = Harness(names=("embed",))
    h.sup.status_sink = StatusPublisher(data.write_status, data.status_path, h.sup.console.warn, h.sup.console.info)
    h.sup.start_all(0.0)
    h.ready("embed")
    writer.error = error
    h.now = 100.0
    h.exit("embed", 1)  # publishes: fails
    for t in (100.5, 101.0, 101.0 + HEARTBEAT_S, 101.0 + 2 * HEARTBEAT_S):
        h.at(t)
    assert [n for n, _ in h.spawner.spawned] == ["embed", "embed"]  # restarted while the disk is full
    h.ready("embed")
    warnings = [line for line in h.err.getvalue().splitlines() if line.startswith("Warning: cannot write")]
    assert warnings == [f"Warning: cannot write {tmp_path / '.status.json'} ({os.strerror(error)}); serving continues"]
    before = len(writer.written)
    writer.error = None
    h.at(200.0)
    assert len(writer.written) == before + 1
    assert json.loads(writer.written[-1])["services"]["embed"]["restarts"] == 1
    assert f"The live status is written to {tmp_path / '.status.json'} again." in h.out.getvalue()
    writer.error = error  # a new episode: warned once more
    h.at(300.0)
    h.at(400.0)
    assert len([line for line in h.err.getvalue().splitlines() if line.startswith("Warning: cannot write")]) == 2


class ObedientReaper:
    """Reports a child's exit once it was sent SIGTERM, unless its pid is in ``stubborn`` (then only on SIGKILL)."""

    def __init__(self, spawner: FakeSpawner, stubborn: set[int] | None = None) -> None:
        self.spawner, self.stubborn, self.reaped = spawner, stubborn or set(), set[int]()

    def __call__(self) -> list[tuple[int, int]]:
        exits = []
        for pid, sig in self.spawner.signals:
            if pid not in self.reaped and (sig == signal.SIGKILL or pid not in self.stubborn):
                self.reaped.add(pid)
                exits.append((pid, -sig))
        return exits


class InstantMailbox(Mailbox):
    """A mailbox whose wait returns at once: the fake clock, not the wall clock, decides."""

    def wait(self, timeout_s: float) -> None:
        pass


def crashing_sink(after: int) -> Callable[[Mapping[str, object]], None]:
    """A status sink with a bug: it raises on its ``after``-th call."""
    calls = [0]

    def sink(status: Mapping[str, object]) -> None:
        calls[0] += 1
        if calls[0] >= after:
            raise RuntimeError("bug in the sink")

    return sink


def test_an_unexpected_error_in_the_loop_stops_the_children_with_sigterm_first() -> None:
    """A bug that escapes the loop: every child gets SIGTERM, is reaped, and only then does the error leave run()."""
    h = Harness()
    h.sup.reaper = ObedientReaper(h.spawner)
    h.sup.status_sink = crashing_sink(after=1)
    with pytest.raises(RuntimeError, match="bug in the sink"):
        h.sup.run()
    pids = [pid for _, pid in h.spawner.spawned]
    assert [(pid, signal.SIGTERM) for pid in pids] == h.spawner.signals[: len(pids)]
    assert all(c.handle is None for c in h.sup.children) and h.sup.exit_code == 1
    assert "Error: the supervisor failed (RuntimeError: bug in the sink); stopping the services." in h.err.getvalue()


def test_after_an_unexpected_error_a_child_ignoring_sigterm_is_killed_at_the_stop_timeout() -> None:
    """The emergency stop keeps the stop timeout: TERM, wait, then KILL only the one that stayed."""
    h = Harness(stop_timeout_s=3.0)
    ticks = iter(float(t) / 10 for t in range(10_000))
    h.sup.clock = lambda: next(ticks)
    h.sup.mailbox = InstantMailbox()
    h.sup.start_all(0.0)  # pids 101 (embed), 102 (rerank)
    h.sup.reaper = ObedientReaper(h.spawner, stubborn={101})
    h.sup.stop_after_failure()
    assert h.spawner.signals[:2] == [(101, signal.SIGTERM), (102, signal.SIGTERM)]
    assert (102, signal.SIGKILL) in h.spawner.signals  # its group, after it exited: no grandchild stays
    assert (101, signal.SIGKILL) in h.spawner.signals
    assert "process 101 did not stop within 3 s; killing it now" in h.err.getvalue()


def test_a_stale_probe_answer_does_not_clear_the_current_probe(h: Harness) -> None:
    """A late answer for a dead process must not mark the new process's probe as done: that would start a
    second probe beside the one in flight (and let the stale one's successor be judged twice)."""
    started: list[int] = []

    def start_probe(child: Child) -> None:  # the probe thread, minus the thread: the answer is ours to give
        child.probing = True
        started.append(child.generation)

    h.sup.start_probe = start_probe  # type: ignore[method-assign]
    old = h.sup.child_named("embed").generation
    h.at(0.1)  # probe of the first process
    h.exit("embed", 1)
    h.at(1.5)  # restarted ...
    h.at(1.7)  # ... and probed
    child = h.sup.child_named("embed")
    assert started[-1] == child.generation != old and child.probing
    h.sup.handle_probe("embed", old, FAILING)  # the first process's answer arrives late
    assert child.probing
    h.at(1.9)
    assert started.count(child.generation) == 1


def gateway_harness() -> Harness:
    """One TEI and the gateway, whose /health says 503 until the TEI was ready once."""
    h = Harness(names=("embed",), ready_timeout_s=30.0)
    gateway = ChildSpec(name="gateway", label="Gateway", model="", argv=("gw",), env={}, port=9000,
                        health_url="http://127.0.0.1:9000/health", kind="gateway", listening_is_ready=True)
    h.sup.children.append(Child(gateway))
    h.sup.start_all(0.0)
    return h


def test_the_gateway_is_ready_once_it_answers_and_never_killed_for_a_slow_tei() -> None:
    """The gateway's 503 ("a TEI was never ready yet") is its own answer: it is up. A TEI still loading
    past the ready timeout of the gateway's start gets no SIGKILL sent to the gateway."""
    h = gateway_harness()
    gateway = h.sup.child_named("gateway")
    h.sup.handle_probe("gateway", gateway.generation, Check(Answer.NOT_READY))
    assert h.phase("gateway") is Phase.RUNNING and "BANNER" not in h.out.getvalue()
    h.exit("embed", 1)  # the TEI fails its first start and loads again
    for t in (10.0, 29.0, 31.0, 45.0):
        h.at(t)
        h.sup.handle_probe("gateway", gateway.generation, Check(Answer.NOT_READY))
    assert (gateway.handle and (gateway.handle.pid, signal.SIGKILL)) not in h.spawner.signals
    h.ready("embed")
    assert h.out.getvalue().count("BANNER") == 1


def test_a_silent_gateway_is_failing_not_busy() -> None:
    """The gateway serves no /metrics: a silent /health is a failed check; three in a row replace it."""
    h = gateway_harness()
    gateway = h.sup.child_named("gateway")
    h.sup.handle_probe("gateway", gateway.generation, OK)
    for _ in range(3):
        h.sup.handle_probe("gateway", gateway.generation, Check(Answer.SILENT))
    assert h.spawner.signals == [(h.pid("gateway"), signal.SIGKILL)]


def test_in_json_a_line_about_a_child_names_its_model_and_replica(h: Harness) -> None:
    """EMBED_LOG_FORMAT=json: the exit and restart lines carry `model` and `replica` (issue 20's keys)."""
    h.sup.console.use_format("json")
    h.ready("embed")
    h.ready("rerank")
    h.exit("embed", 1)
    lines = [json.loads(line) for line in h.err.getvalue().splitlines()]
    exited = next(r for r in lines if "exited unexpectedly" in r["msg"])
    restarting = next(r for r in lines if r["msg"].startswith("Restarting embeddings server"))
    assert (exited["level"], exited["model"], exited["replica"]) == ("error", "m", 0)
    assert (restarting["level"], restarting["model"], restarting["replica"]) == ("warning", "m", 0)
