"""The loop: spawn TEI children, probe them, restart them with backoff, stop them cleanly."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from embed_launcher.reporting.console import Console
from embed_launcher.reporting.errors import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK
from embed_launcher.supervision import liveness, policy
from embed_launcher.supervision.child import CRASH, DEFAULT_TIMING, Child, Timing
from embed_launcher.supervision.events import (
    Event,
    GatewayRouted,
    Mailbox,
    ProbeAnswered,
    ReadyLogged,
    ReloadPrepared,
    SignalReceived,
)
from embed_launcher.supervision.hints import hint_for, says_cuda_oom
from embed_launcher.supervision.liveness import Answer, Check, Liveness, Progress
from embed_launcher.supervision.notify import Notifier, NullNotifier
from embed_launcher.supervision.plan import ChildSpec
from embed_launcher.supervision.policy import Phase
from embed_launcher.supervision.probe import check_health, read_progress
from embed_launcher.supervision.process import Handle, describe_exit, reap, signal_group
from embed_launcher.supervision.reload import SETTLE_S, SWITCH_TIMEOUT_S, Prepared, Reloader, Switch, outcome
from embed_launcher.supervision.reload import Phase as SwitchPhase
from embed_launcher.supervision.status import HEARTBEAT_S, live_status, status_line

MAX_WAIT_S = 1.0  # the loop wakes at least this often (watchdog, clock-based deadlines)
OUTPUT_GRACE_S = 0.5  # after a child's exit, how long its last lines may take to arrive
SWITCH_PENDING = (SwitchPhase.STARTING, SwitchPhase.SWITCHING)  # a new TEI's exit fails the reload
TEI_USAGE_ERROR = 2  # clap rejected the arguments: retrying cannot help
OOM_LIMIT = 2  # exits with CUDA out of memory in a row before a replica is given up


def times(n: int) -> str:
    return "twice" if n == 2 else f"{n} times"


def about(spec: ChildSpec) -> dict[str, object]:
    """What a line about this child carries in JSON (EMBED_LOG_FORMAT=json): its model and replica number
    (the gateway's access log numbers replicas the same way); nothing for the gateway."""
    return {} if spec.kind == "gateway" else {"model": spec.model, "replica": spec.replica}


class Spawner(Protocol):
    def spawn(self, spec: ChildSpec) -> Handle: ...
    def signal(self, child: Handle, sig: int) -> None: ...


class Supervisor:
    """Runs the children until a stop signal or a fatal failure; returns the exit code.

    Seams (spawner, probe, clock, notifier, status sink) are constructor arguments with
    real defaults; tests pass fakes and drive ``handle_*`` and ``tick`` directly.
    """

    def __init__(
        self,
        specs: Sequence[ChildSpec],
        *,
        console: Console,
        spawner: Spawner,
        mailbox: Mailbox | None = None,
        timing: Timing = DEFAULT_TIMING,
        probe: Callable[[str, float], Answer] = check_health,
        read_progress: Callable[[str, float], Progress | None] = read_progress,
        clock: Callable[[], float] = time.monotonic,
        notifier: Notifier | None = None,
        banner: Callable[[], Sequence[str]] = lambda: (),
        status_sink: Callable[[Mapping[str, object]], object] = lambda status: None,
        reaper: Callable[[], list[tuple[int, int]]] = reap,
        advise: Callable[[ChildSpec, Sequence[str]], str | None] = lambda spec, tail: hint_for(tail),
        reloader: Reloader | None = None,
        gateway_workers: int = 1,
        gateway_json: str = "",
    ) -> None:
        self.children = [Child(spec) for spec in specs]
        self.console = console
        self.spawner = spawner
        self.mailbox = mailbox or Mailbox()
        self.timing = timing
        self.probe = probe
        self.read_progress = read_progress
        self.clock = clock
        self.notifier = notifier or NullNotifier()
        self.banner = banner
        self.status_sink = status_sink
        self.reaper = reaper
        self.advise = advise  # what to tell the user when giving up on a child, from its last lines
        self.stopping = False
        self.stop_deadline: float | None = None
        self.killed_all = False
        self.exit_code = EXIT_OK
        self.banner_shown = False
        self.last_watchdog = 0.0
        self.last_publish = float("-inf")
        # Reloads (SIGHUP): None = the launcher gave no reloader, SIGHUP only reaches the gateway (keys).
        self.reloader = reloader
        self.gateway_workers = gateway_workers  # each worker says when it applied new routes
        self.gateway_json = gateway_json  # the gateway's configuration in force (a failed switch goes back to it)
        self.generation = 1  # the configuration in force
        self.next_generation = 2
        self.reload_seq = 0  # reloads asked for (SIGHUPs)
        self.running_seq = 0  # the last one asked for when the reload in progress started: its record's number
        self.reload_record: dict[str, object] | None = None
        self.preparing = False
        self.reload_pending = False  # a SIGHUP during a reload: one more once this one is over
        self.switch: Switch | None = None

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> int:
        """Start every child and supervise until everything has stopped.

        An unexpected exception (a bug) still stops the children gracefully before it leaves
        the launcher: as PID 1 our exit would have the kernel SIGKILL every TEI mid-request.
        """
        try:
            self.start_all(self.clock())
            while not self.finished():
                self.turn()
        except Exception as exc:
            self.console.error(f"Error: the supervisor failed ({type(exc).__name__}: {exc}); stopping the services.")
            self.exit_code = EXIT_FAILURE
            self.stop_after_failure()
            raise
        return self.exit_code

    def turn(self) -> None:
        """One loop turn: wait for an event or the next deadline, then handle what is due."""
        self.mailbox.wait(self.wait_timeout(self.clock()))
        for event in self.mailbox.drain():
            self.dispatch(event)
        self.reap_children()
        self.purge_retired()
        self.tick(self.clock())

    def dispatch(self, event: Event) -> None:
        """Route one mailbox event to its handler."""
        if isinstance(event, SignalReceived):
            self.handle_signal(event.signum)
        elif isinstance(event, ProbeAnswered):
            self.handle_probe(event.name, event.generation, event.check)
        elif isinstance(event, ReadyLogged):
            self.handle_ready_line(event.name)
        elif isinstance(event, ReloadPrepared):
            self.handle_prepared(event.prepared)
        elif isinstance(event, GatewayRouted):
            self.handle_routed(event.generation, event.refusal)

    def finished(self) -> bool:
        """Done once a stop was decided and no child process is left."""
        return self.stopping and all(c.handle is None for c in self.children)

    def wait_timeout(self, now: float) -> float:
        """Sleep until the next deadline any child or the stop has, at most MAX_WAIT_S."""
        deadlines = [now + MAX_WAIT_S]
        for c in self.children:
            if c.state.phase in (Phase.STARTING, Phase.RUNNING) and not c.probing:
                deadlines.append(c.next_probe_at)
            if c.state.phase is Phase.STARTING:
                deadlines.append(c.state.since + self.timing.ready_timeout_s)
            if c.state.restart_at is not None:
                deadlines.append(c.state.restart_at)
        if self.stop_deadline is not None and not self.killed_all:
            deadlines.append(self.stop_deadline)
        if self.switch is not None and self.switch.phase is not SwitchPhase.STARTING:
            deadlines.append(self.switch.deadline)
        return max(0.0, min(deadlines) - now)

    # -- lifecycle verbs --------------------------------------------------------------------

    def start_all(self, now: float) -> None:
        """Spawn every child at once: each has its own port and model, nothing to serialise."""
        for child in self.children:
            self.spawn_child(child, now)
        self.publish()

    def spawn_child(self, child: Child, now: float) -> None:
        """Start a process for ``child``; a spawn that fails (e.g. ENOEXEC) counts as a failed start."""
        child.generation += 1
        child.probing = False
        child.liveness = Liveness()
        child.killing, child.kill_reason = False, ""
        child.next_probe_at = now + self.timing.startup_poll_s
        before = child.state.restarts
        try:
            child.handle = self.spawner.spawn(child.spec)
        except OSError as exc:
            child.state = policy.spawned(child.state, now)
            child.spawned(before)
            self.console.error(f"Error: could not start {child.spec.argv[0]}: {exc.strerror or exc}.")
            self.child_exited(child, 127, now)
            return
        child.state = policy.spawned(child.state, now)
        child.spawned(before)

    def begin_stop(self, now: float, exit_code: int, reason: str) -> None:
        """TERM every child's process group; KILL whatever is left at the stop deadline."""
        if self.stopping:
            return
        self.stopping = True
        self.exit_code = exit_code
        self.stop_deadline = now + self.timing.stop_timeout_s
        self.console.info("")
        self.console.info(f"Stopping services... ({reason})")
        self.notifier.stopping()
        for child in self.children:
            if child.handle is not None:
                self.spawner.signal(child.handle, signal.SIGTERM)
            child.state = policy.stopping(child.state, now)
        self.publish()

    def kill_all(self, why: str) -> None:
        """SIGKILL every remaining process group now."""
        self.killed_all = True
        alive = [c for c in self.children if c.handle is not None]
        if alive:
            self.console.warn(f"Warning: {why}; killing {', '.join(c.spec.label.lower() for c in alive)} now.")
        for child in alive:
            assert child.handle is not None
            self.spawner.signal(child.handle, signal.SIGKILL)

    def stop_after_failure(self) -> None:
        """The loop broke: TERM every child's group, reap until the stop timeout, then KILL what is left.

        Deliberately apart from the loop's own machinery (publish, policy, output relays), which
        may be what failed: only signals, the reaper and the clock.
        """
        self.stopping = True
        live = {c.handle.pid: c.handle for c in self.children if c.handle is not None}
        for handle in live.values():
            self._signal_quietly(handle, signal.SIGTERM)
        deadline = self.clock() + self.timing.stop_timeout_s
        while True:
            for pid, _ in self.reaper():
                if pid in live:
                    self._signal_quietly(live.pop(pid), signal.SIGKILL)  # grandchildren must not outlive their TEI
            if not live or self.clock() >= deadline:
                break
            self.mailbox.wait(min(MAX_WAIT_S, deadline - self.clock()))  # SIGCHLD wakes us
            for _ in self.mailbox.drain():
                pass  # the reaper is what counts; a second stop signal changes nothing now
        for handle in live.values():
            self.console.warn(f"Warning: process {handle.pid} did not stop within {self.timing.stop_timeout_s:g} s;"
                              " killing it now.")
            self._signal_quietly(handle, signal.SIGKILL)
        for child in self.children:
            child.handle = None

    def _signal_quietly(self, handle: Handle, sig: int) -> None:
        try:
            self.spawner.signal(handle, sig)
        except Exception:
            pass  # stopping the others matters more than this one's error

    # -- handlers ---------------------------------------------------------------------------

    def handle_signal(self, signum: int) -> None:
        """First stop signal: graceful stop. Any later one: kill at once."""
        if signum == signal.SIGCHLD:
            return  # reaping happens on every loop turn
        if signum == signal.SIGHUP:
            self.forward_reload()
            self.request_reload()
            return
        name = signal.Signals(signum).name
        if not self.stopping:
            self.begin_stop(self.clock(), EXIT_OK, f"{name} received")
        elif not self.killed_all:
            if self.exit_code == EXIT_OK:
                self.exit_code = EXIT_FAILURE
            self.kill_all(f"second signal ({name}) during shutdown")

    def forward_reload(self) -> None:
        """SIGHUP: the gateway re-reads the keys file at once (it also watches it); nothing stops."""
        gateway = [c for c in self.children if c.spec.kind == "gateway" and c.handle is not None]
        if self.stopping or not gateway:
            self.console.info("SIGHUP received: nothing to reload" + ("" if self.stopping else
                              " (no gateway runs; the keys file needs it)"))
            return
        for child in gateway:
            assert child.handle is not None
            self._signal_quietly(child.handle, signal.SIGHUP)
        self.console.info("SIGHUP received: the gateway re-reads the keys file")

    def handle_ready_line(self, name: str) -> None:
        """The child logged "Ready": probe now instead of at the next poll."""
        for child in self.children:
            if child.spec.name == name and child.state.phase is Phase.STARTING:
                child.next_probe_at = min(child.next_probe_at, self.clock())

    def handle_probe(self, name: str, generation: int, check: Check) -> None:
        """A health check finished for the process of ``generation``."""
        child = self.child_named(name)
        if generation != child.generation:
            return  # a dead process's late answer: the current process's probe may still be in flight
        child.probing = False
        if self.stopping or child.handle is None:
            return
        if child.spec.listening_is_ready and check.answer is Answer.NOT_READY:
            check = Check(Answer.OK)  # the gateway answered itself: it serves; its 503 speaks for the TEIs
        now = self.clock()
        if child.state.phase is Phase.STARTING:
            if check.answer is Answer.OK:
                self.child_ready(child, now)
            else:
                child.next_probe_at = now + self.timing.startup_poll_s
        elif child.state.phase is Phase.RUNNING:
            self.liveness_result(child, check, now)

    def liveness_result(self, child: Child, check: Check, now: float) -> None:
        """Judge a ready child: healthy or busy keeps serving; failing too often, or hung, is replaced."""
        child.next_probe_at = now + self.timing.health_interval_s
        before = child.liveness.health
        child.liveness = liveness.judge(child.liveness, check, now)
        reason = liveness.restart_reason(
            child.liveness, now, max_failures=self.timing.health_failures, hang_timeout_s=self.timing.hang_timeout_s
        )
        if reason is not None and child.handle is not None and not child.killing:
            child.killed_for("unhealthy" if child.liveness.failures >= self.timing.health_failures else "hung")
            self.console.error(f"Error: {child.spec.label} server {reason}; restarting it.", **about(child.spec))
            self.spawner.signal(child.handle, signal.SIGKILL)
        if child.liveness.health is not before:
            self.notifier.status(self.status_line())
            self.publish()

    def child_ready(self, child: Child, now: float) -> None:
        """A child answered /health: announce it (the banner once all are up)."""
        restarted = child.state.restarts > 0
        child.state = policy.became_ready(child.state, now)
        child.liveness = liveness.became_ready(now)
        child.next_probe_at = now + self.timing.health_interval_s
        if self.banner_due():
            self.show_banner()
        elif self.banner_shown and restarted:
            self.console.info(f"{child.spec.label} server is ready again (restart {child.state.restarts}).")
            self.notifier.status(self.status_line())
        self.publish()

    def reap_children(self) -> None:
        """Collect exits; orphans (we may be PID 1) are reaped and otherwise ignored."""
        for pid, returncode in self.reaper():
            for child in self.children:
                if child.handle is not None and child.handle.pid == pid:
                    self.child_exited(child, returncode, self.clock())
                    break

    def child_exited(self, child: Child, returncode: int, now: float) -> None:
        """Record a child's end and decide what happens next (policy.exited)."""
        handle = child.handle
        if handle is not None:
            popen = getattr(handle, "popen", None)
            if popen is not None:
                popen.returncode = returncode  # we reaped it; keep Popen from guessing later
            signal_group(handle.pid, signal.SIGKILL)  # grandchildren must not outlive their TEI
            wait_output = getattr(handle, "wait_output", None)
            if wait_output is not None:
                wait_output(OUTPUT_GRACE_S)
        child.handle = None
        child.generation += 1
        child.last_exit = describe_exit(returncode)
        child.exit_reason = child.kill_reason if child.killing and child.kill_reason else CRASH
        if child.killing and returncode == -signal.SIGKILL:
            # We killed it (ready timeout, failed health checks): no OOM hint to send people astray.
            child.last_exit = "killed by the launcher with SIGKILL"
        previous = child.state.phase
        tail = list(handle.tail) if handle is not None and not self.stopping else []
        # "In a row": a replica that served a while since its last out-of-memory exit starts a new count.
        served_long = previous is Phase.RUNNING and now - child.state.since >= self.timing.policy.reset_after_s
        child.oom_streak = ((0 if served_long else child.oom_streak) + 1) if says_cuda_oom(tail) else 0
        fatal = (previous is Phase.STARTING and returncode == TEI_USAGE_ERROR) or child.oom_streak >= OOM_LIMIT
        if child.retired:
            child.state = policy.exited(policy.stopping(child.state, now), now, self.timing.policy)
            self.publish()
            return
        child.state = policy.exited(child.state, now, self.timing.policy, fatal=fatal)
        if self.switch is not None and child in self.switch.new and self.switch.phase in SWITCH_PENDING \
                and not self.stopping:  # once the gateway switched, a new TEI is restarted like any other
            self.console.error(f"Error: {child.spec.label} server failed to start ({child.last_exit}).")
            self.fail_reload(f"the new {child.spec.label.lower()} server failed to start ({child.last_exit})", now)
            return
        if not self.stopping:
            self.report_exit(child, previous, handle)
        self.publish()

    def report_exit(self, child: Child, previous: Phase, handle: Handle | None) -> None:
        """Say what happened to the child, and give up if the policy says so."""
        label = child.spec.label
        if previous is Phase.STARTING:
            self.console.error(f"Error: {label} server failed to start ({child.last_exit}).", **about(child.spec))
        else:
            self.console.error(f"Error: {label} server exited unexpectedly ({child.last_exit}).", **about(child.spec))
        if child.state.phase is Phase.FATAL and self.serving_siblings(child):
            self.abandon(child)
        elif child.state.phase is Phase.FATAL:
            self.give_up(child, handle)
        else:
            delay = (child.state.restart_at or child.state.since) - child.state.since
            self.console.warn(f"Restarting {label.lower()} server in {delay:g} s (restart {child.state.restarts + 1}).",
                              **about(child.spec))
            self.notifier.status(self.status_line())

    def serving_siblings(self, child: Child) -> list[Child]:
        """The other replicas of the child's model that are not given up."""
        return [c for c in self.children if c is not child and c.spec.service_name == child.spec.service_name
                and c.spec.kind == child.spec.kind and not c.abandoned and c.state.phase is not Phase.FATAL]

    def abandon(self, child: Child) -> None:
        """Give up one replica while its siblings serve: one message with the model, the GPU and the fix."""
        child.abandoned = True
        spec, siblings = child.spec, len(self.serving_siblings(child))
        where = f"GPU {spec.gpu}" if spec.gpu is not None else "its CPU cores"
        variable = "RERANK" if spec.kind == "rerank" else "EMBED"
        if child.oom_streak >= OOM_LIMIT:
            why = f"ran out of GPU memory (CUDA out of memory) on {where} {times(child.oom_streak)} in a row"
            fix = (f"Fix: fewer replicas per GPU ({variable}_REPLICAS, or `replicas`/`gpus` in the models file),"
                   f" or a smaller {variable}_MAX_BATCH_TOKENS (`max_batch_tokens` in the models file).")
        else:
            why = f"on {where} cannot start ({child.last_exit})"
            fix = "Fix: see its last output above; the other replicas are unaffected."
        self.console.error(f"Error: {spec.label} of {spec.model} {why}; giving up on this replica. "
                           f"{siblings} other replica{'s' if siblings != 1 else ''} keep serving. {fix}")
        self.notifier.status(self.status_line())
        if self.banner_due():
            self.show_banner()

    def banner_due(self) -> bool:
        """Every child serves, or was given up while its siblings serve."""
        return not self.banner_shown and all(c.state.phase is Phase.RUNNING or c.abandoned for c in self.children)

    def show_banner(self) -> None:
        self.banner_shown = True
        self.console.lines(list(self.banner()))
        self.notifier.ready(self.status_line())

    def give_up(self, child: Child, handle: Handle | None) -> None:
        """Stop everything and exit non-zero, showing the child's last words."""
        label = child.spec.label
        if child.oom_streak >= OOM_LIMIT:
            variable = "RERANK" if child.spec.kind == "rerank" else "EMBED"
            where = f"GPU {child.spec.gpu}" if child.spec.gpu is not None else "the GPU"
            why = (f"ran out of GPU memory on {where} {times(child.oom_streak)} in a row (fix: fewer replicas per GPU,"
                   f" or a smaller {variable}_MAX_BATCH_TOKENS)")
            code = EXIT_FAILURE
        elif child.state.start_failures >= self.timing.policy.max_start_failures:
            why = f"failed to start {child.state.start_failures} times in a row"
            code = EXIT_FAILURE
        else:
            why = "rejected its arguments (exit 2): check the TEI tuning variables and the TEI version"
            code = EXIT_CONFIG
        self.console.error(f"Error: {label} server {why}; giving up.", **about(child.spec))
        tail = list(handle.tail) if handle is not None else []
        if tail:
            self.console.error(f"Last output of the {label.lower()} server:")
            for line in tail[-10:]:
                self.console.error(f"  {line}")
        advice = self.advise(child.spec, tail)
        if advice:
            self.console.error(f"Hint: {advice}")
        self.begin_stop(self.clock(), code, f"{label.lower()} server gave up")

    # -- time-driven work -------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Do whatever is due: probes, ready timeouts, restarts, the stop deadline, the watchdog."""
        if self.stopping:
            if self.stop_deadline is not None and now >= self.stop_deadline and not self.killed_all:
                self.kill_all(f"stop timeout ({self.timing.stop_timeout_s:g} s) reached")
            return
        for child in self.children:
            self.tick_child(child, now)
        if self.switch is not None:
            self.tick_switch(now)
        if now - self.last_publish >= HEARTBEAT_S:
            self.publish()
        interval = self.notifier.watchdog_interval_s
        if interval is not None and now - self.last_watchdog >= interval:
            self.last_watchdog = now
            self.notifier.watchdog()

    def tick_child(self, child: Child, now: float) -> None:
        """Time-driven work for one child."""
        if child.retired:
            return  # a reload stops it: no probe, no restart
        phase = child.state.phase
        if phase is Phase.STARTING and now - child.state.since >= self.timing.ready_timeout_s:
            if child.handle is not None and not child.killing:
                self.console.error(
                    f"Error: {child.spec.label} server did not become ready within"
                    f" {self.timing.ready_timeout_s:g} seconds."
                )
                child.killed_for("start_timeout")  # its exit is then counted as a failed start
                self.spawner.signal(child.handle, signal.SIGKILL)
        elif phase in (Phase.STARTING, Phase.RUNNING):
            if not child.probing and now >= child.next_probe_at and child.handle is not None:
                self.start_probe(child)
        elif policy.restart_due(child.state, now):
            self.spawn_child(child, now)
            self.publish()

    def start_probe(self, child: Child) -> None:
        """Check the child in a daemon thread; the answer comes back through the mailbox.

        A ready child gets a liveness check: /health, then /metrics if /health was silent.
        Daemon threads, not an executor: the interpreter joins executor threads at exit, so a
        probe stuck on a draining TEI would hold up the launcher's own exit by its timeout.
        """
        child.probing = True
        running = child.state.phase is Phase.RUNNING
        timeout = self.timing.health_timeout_s if running else 1.0
        name, generation, spec = child.spec.name, child.generation, child.spec

        def ask() -> None:
            try:
                answer = self.probe(spec.health_url, timeout)
                busy = running and answer is Answer.SILENT and bool(spec.metrics_url)
                check = Check(answer, self.read_progress(spec.metrics_url, timeout) if busy else None)
            except Exception:
                check = Check(Answer.FAILING)
            self.mailbox.post(ProbeAnswered(name, generation, check))

        threading.Thread(target=ask, name=f"probe-{name}", daemon=True).start()

    # -- reloads (blue-green) ------------------------------------------------------------------

    def request_reload(self) -> None:
        """SIGHUP: re-read the configuration (off the loop); one at a time, a SIGHUP meanwhile queues one more."""
        if self.reloader is None or self.stopping:
            return
        self.reload_seq += 1
        self.reload_record = outcome(self.reload_seq, "running", "reloading", self.generation, time.time)
        if self.preparing or self.switch is not None:
            self.reload_pending = True
        else:
            self.start_reload()
        self.publish()

    def start_reload(self) -> None:
        assert self.reloader is not None
        self.console.info("Reloading the configuration (the env file and the models file)...")
        self.preparing, self.reload_pending = True, False
        self.running_seq = self.reload_seq  # a SIGHUP from now on asks for one more reload
        generation, self.next_generation = self.next_generation, self.next_generation + 1
        self.reloader.prepare(generation)

    def handle_prepared(self, prepared: Prepared) -> None:
        """The launcher prepared the reload: refuse it, apply settings only, or start the new TEIs."""
        self.preparing = False
        if self.stopping:
            return
        now = self.clock()
        if prepared.failure is not None:
            self.end_reload("failed", prepared.failure)
            return
        if prepared.timing is not None:
            self.timing = prepared.timing  # supervision numbers apply at once, to every child
        gateway = self.gateway_child()
        if prepared.nothing or (gateway is None and not prepared.new_specs and not prepared.retire):
            assert self.reloader is not None
            self.reloader.committed(prepared)
            self.generation = prepared.generation
            self.end_reload("ok", f"nothing to change ({prepared.summary})")
            return
        self.console.info(f"Reload (configuration {prepared.generation}): {prepared.summary}")
        new = [Child(spec, config_generation=prepared.generation) for spec in prepared.new_specs]
        old = [c for c in self.children if c.spec.kind != "gateway" and c.spec.service_name in prepared.retire
               and not c.retired]
        self.switch = Switch(prepared, new, old, gateway.spec if gateway else None, self.gateway_json)
        self.children[-1:-1] = new  # before the gateway (it stays last)
        for child in new:
            self.spawn_child(child, now)
        self.publish()
        self.tick_switch(now)

    def gateway_child(self) -> Child | None:
        return next((c for c in self.children if c.spec.kind == "gateway"), None)

    def tick_switch(self, now: float) -> None:
        """Move the switch on: new TEIs ready -> gateway switched -> settle -> old TEIs drained and stopped."""
        switch = self.switch
        assert switch is not None
        if switch.phase is SwitchPhase.STARTING:
            if all(c.state.phase is Phase.RUNNING for c in switch.new):
                self.switch_gateway(switch, now)
        elif switch.phase is SwitchPhase.SWITCHING and now >= switch.deadline:
            self.fail_reload(f"the gateway did not apply the new routes within {SWITCH_TIMEOUT_S:g} s", now)
        elif switch.phase is SwitchPhase.SETTLING and now >= switch.deadline:
            switch.phase, switch.deadline = SwitchPhase.DRAINING, now + switch.prepared.drain_timeout_s
            for child in switch.old:
                self.retire(child, now)
            self.publish()
        elif switch.phase is SwitchPhase.DRAINING:
            left = [c for c in switch.old if c.handle is not None]
            if not left:
                self.finish_reload()
            elif now >= switch.deadline and not switch.killed:
                switch.killed = True
                self.console.warn(f"Warning: {', '.join(c.spec.label.lower() for c in left)} did not finish within"
                                  f" EMBED_DRAIN_TIMEOUT ({switch.prepared.drain_timeout_s:g} s); killing now.")
                for child in left:
                    assert child.handle is not None
                    self._signal_quietly(child.handle, signal.SIGKILL)

    def switch_gateway(self, switch: Switch, now: float) -> None:
        """Every new TEI is ready: hand the gateway its new routes (file + SIGHUP) and wait for its word."""
        prepared, gateway = switch.prepared, self.gateway_child()
        assert self.reloader is not None
        try:
            self.reloader.write_gateway_config(prepared.gateway_json)
        except OSError as exc:
            self.fail_reload(f"cannot write the gateway's configuration ({exc.strerror or exc})", now)
            return
        if gateway is not None and prepared.gateway_spec is not None:
            gateway.spec = prepared.gateway_spec  # its restarts from now on get the new routes
        switch.phase, switch.deadline = SwitchPhase.SWITCHING, now + SWITCH_TIMEOUT_S
        if gateway is None or gateway.handle is None or gateway.state.phase is not Phase.RUNNING:
            self.gateway_switched(switch, now)  # no gateway serving now: its next start has the new routes
            return
        self._signal_quietly(gateway.handle, signal.SIGHUP)

    def handle_routed(self, generation: int, refusal: str | None) -> None:
        """A gateway worker's line: it applied (or refused) a configuration."""
        switch = self.switch
        if switch is None or switch.phase is not SwitchPhase.SWITCHING or generation != switch.prepared.generation:
            return
        now = self.clock()
        if refusal is not None:
            self.fail_reload(f"the gateway refused the new routes: {refusal}", now)
            return
        switch.confirmations += 1
        if switch.confirmations >= self.gateway_workers:
            self.gateway_switched(switch, now)

    def gateway_switched(self, switch: Switch, now: float) -> None:
        self.gateway_json = switch.prepared.gateway_json
        switch.phase, switch.deadline = SwitchPhase.SETTLING, now + SETTLE_S
        for child in switch.old:
            child.retired = True  # draining: shown as such, never restarted
        self.generation = switch.prepared.generation
        assert self.reloader is not None
        self.reloader.committed(switch.prepared)
        self.publish()

    def retire(self, child: Child, now: float) -> None:
        """SIGTERM: TEI stops listening and finishes the requests it holds (tei-contract §4)."""
        child.retired = True
        child.state = policy.stopping(child.state, now)
        if child.handle is not None:
            self._signal_quietly(child.handle, signal.SIGTERM)

    def finish_reload(self) -> None:
        switch = self.switch
        assert switch is not None
        self.children = [c for c in self.children if c not in switch.old]
        self.switch = None
        self.end_reload("ok", f"configuration {switch.prepared.generation} serves ({switch.prepared.summary})")

    def fail_reload(self, reason: str, now: float) -> None:
        """Stop the new TEIs and give the gateway back its routes: the previous configuration keeps serving."""
        switch = self.switch
        if switch is None:
            return
        self.switch = None
        gateway = self.gateway_child()
        if switch.phase is SwitchPhase.SWITCHING and self.reloader is not None:
            if gateway is not None and switch.previous_gateway is not None:
                gateway.spec = switch.previous_gateway
            back = self.rollback_json(switch.previous_json)
            try:
                self.reloader.write_gateway_config(back)
                if gateway is not None and gateway.handle is not None:
                    self._signal_quietly(gateway.handle, signal.SIGHUP)
            except OSError:
                pass  # the gateway never applied the new file's routes either, or the line above says so
        for child in switch.new:
            self.retire(child, now)
        self.end_reload("failed", reason)

    def rollback_json(self, previous: str) -> str:
        """The previous routes under a fresh generation number, so that a gateway that switched goes back."""
        import json

        data = json.loads(previous) if previous else {}
        data["generation"] = self.next_generation
        self.next_generation += 1
        return json.dumps(data, separators=(",", ":"))

    def end_reload(self, state: str, message: str) -> None:
        """Say how the reload ended and record it for `embed_manage --reload`; run a queued one."""
        if state == "ok":
            self.console.info(f"Reload complete: {message}.")
        else:
            self.console.error(f"Reload failed: {message}; still serving the previous configuration")
        self.reload_record = outcome(self.running_seq, state, message, self.generation, time.time)
        self.notifier.status(self.status_line())
        self.publish()
        if self.reload_pending and not self.stopping:
            self.start_reload()

    def purge_retired(self) -> None:
        """Retired children that have exited leave the table (the old ones leave at the switch's end)."""
        old = self.switch.old if self.switch is not None else []
        self.children = [c for c in self.children if not (c.retired and c.handle is None and c not in old)]

    # -- reporting --------------------------------------------------------------------------

    def child_named(self, name: str) -> Child:
        return next(c for c in self.children if c.spec.name == name)

    def status_line(self) -> str:
        """One line for systemd's STATUS=: each service's state."""
        return status_line(self.children)

    def publish(self) -> None:
        """Hand the live status to the sink (the data dir's status file, read by embed_manage --status)."""
        now = self.clock()
        self.last_publish = now
        status = live_status(self.children, now, wall_offset=time.time() - now, stopping=self.stopping)
        self.status_sink({**status, "generation": self.generation, "reload": self.reload_record})
