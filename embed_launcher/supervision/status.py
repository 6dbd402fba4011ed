"""The live status (pure): what embed_manage --status reads and systemd's STATUS= line shows."""

from __future__ import annotations

from collections.abc import Sequence

from embed_launcher.supervision.child import Child
from embed_launcher.supervision.liveness import Health
from embed_launcher.supervision.policy import Phase

HEARTBEAT_S = 5.0  # the live status is rewritten at least this often: embed_manage --alive reads its age


def state_word(child: Child) -> str:
    """The phase, or for a ready child how it is doing (ready, busy, unhealthy); "gave up" for a replica
    abandoned while its siblings serve."""
    if child.abandoned:
        return "gave up"
    if child.state.phase is Phase.RUNNING:
        return child.liveness.health.value
    return child.state.phase.value


def status_line(children: Sequence[Child]) -> str:
    """One line for systemd's STATUS=: each service's state."""
    return "; ".join(f"{c.spec.label.lower()}: {state_word(c)}" for c in children)


def live_status(children: Sequence[Child], now: float, *, wall_offset: float, stopping: bool) -> dict[str, object]:
    """Every child's record for the status file; ``wall_offset`` turns the monotonic clock into wall time."""
    services: dict[str, object] = {}
    for c in children:
        running = c.state.phase is Phase.RUNNING
        busy = running and c.liveness.health is Health.BUSY
        services[c.spec.name] = {
            "kind": c.spec.kind,
            "model": c.spec.model,
            "port": c.spec.port,
            "pid": c.handle.pid if c.handle is not None else None,
            "state": c.state.phase.value,
            "health": c.liveness.health.value if running else None,
            "queue_size": c.liveness.progress.queue_size if busy and c.liveness.progress else None,
            "idle_s": round(c.liveness.idle_s(now), 1) if busy else None,
            "since": round(c.state.since + wall_offset, 3),
            "restarts": c.state.restarts,
            "restarts_by_reason": dict(c.restarts_by_reason),  # crash, unhealthy, hung, start_timeout
            "last_exit": c.last_exit,
            "health_url": c.spec.health_url,
            "metrics_url": c.spec.metrics_url,
            "service": c.spec.service_name,
            "replica": c.spec.replica,
            "replicas": c.spec.replicas,
            "gpu": c.spec.gpu,
            "cpus": list(c.spec.cpus),
            "gave_up": c.abandoned,
            "generation": c.config_generation,  # the configuration (reload) it serves
            "draining": c.retired,  # a reload stops it once its requests in flight are done
        }
    return {
        "stopping": stopping, "updated": round(now + wall_offset, 3), "heartbeat_s": HEARTBEAT_S, "services": services,
    }  # fmt: skip
