"""What the launcher last published (`.status.json`), whether it can be believed, and the services it names.

--status and --alive read the live status the launcher publishes (rewritten at least every
heartbeat) instead of probing TEI themselves: the launcher already knows a busy TEI (its /health
queued behind inference, work still completing on /metrics) from a dead one, and a probe of our
own would call a busy server dead and put one more request in its backend's queue. A status older
than a few heartbeats means the launcher's loop is stuck: then nothing is healthy.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from embed_launcher.datadir.directory import DataDir, StateSnapshot

STALE_AFTER_HEARTBEATS = 6  # a live status this many heartbeats old: the launcher's loop is stuck
DEFAULT_HEARTBEAT_S = 5.0


@dataclass(frozen=True)
class ServiceView:
    """One enabled service as the state files describe it."""

    name: str
    label: str
    model: str
    port: int
    auth: bool

def enabled_services(state: StateSnapshot, environ: Mapping[str, str]) -> list[ServiceView]:
    """Enabled services from the state files, with the original's defaults where files are missing."""
    embed_on = state.embed_active if state.embed_active is not None else True
    rerank_on = bool(state.rerank_active)
    embed_port = state.embed_port or int(environ.get("EMBED_PORT", "8000") or 8000)
    services = []
    if embed_on:
        services.append(
            ServiceView(
                "embed", "Embeddings", state.embed_model or "BAAI/bge-small-en-v1.5", embed_port, bool(state.embed_auth)
            )
        )
    if rerank_on:
        services.append(
            ServiceView(
                "rerank", "Reranker", state.rerank_model or "BAAI/bge-reranker-v2-m3",
                state.rerank_port or (8001 if embed_on else 8000), bool(state.rerank_auth),
            )
        )  # fmt: skip
    return services

def pid_alive(pid: object) -> bool:
    """Whether a process with this pid exists (zombies count as gone)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False

@dataclass(frozen=True)
class LiveStatus:
    """The launcher's last published status, and whether it can be believed."""

    launcher_pid: object
    alive: bool  # the launcher process exists
    age_s: float | None  # seconds since it was written (None: never, or no timestamp)
    stale_after_s: float
    stopping: bool
    services: Mapping[str, Mapping[str, object]]
    raw: Mapping[str, object] = field(default_factory=dict)  # the whole status (its reload record, generation)

    @property
    def fresh(self) -> bool:
        """Alive and recently rewritten: its loop is turning."""
        return self.alive and self.age_s is not None and self.age_s <= self.stale_after_s

def read_live(data: DataDir, now: float) -> LiveStatus:
    """Read `.status.json` and judge it."""
    status = data.read_status() or {}
    pid = status.get("launcher_pid")
    updated, heartbeat = status.get("updated"), status.get("heartbeat_s")
    age = now - updated if isinstance(updated, (int, float)) else None
    heartbeat_s = heartbeat if isinstance(heartbeat, (int, float)) and heartbeat > 0 else DEFAULT_HEARTBEAT_S
    services = status.get("services")
    return LiveStatus(
        launcher_pid=pid,
        alive=pid_alive(pid) or os.getpid() == pid,
        age_s=None if age is None else max(0.0, age),
        stale_after_s=STALE_AFTER_HEARTBEATS * heartbeat_s,
        stopping=bool(status.get("stopping")),
        services=services if isinstance(services, dict) else {},
        raw=status,
    )

def all_services(state: StateSnapshot, environ: Mapping[str, str], live: LiveStatus) -> list[ServiceView]:
    """The enabled services of the state files, then every other child the launcher runs (models, gateway)."""
    # Shown per child: replicas, and a model a reload replaced (its TEIs are named "embed@2").
    replicated = {str(r.get("service")) for name, r in live.services.items()
                  if isinstance(r, dict) and (r.get("replicas", 1) != 1 or r.get("service", name) != name)}
    views = [v for v in enabled_services(state, environ) if v.name not in replicated]  # shown per replica
    known = {v.name for v in views}
    for name, recorded in live.services.items():
        if name in known or not isinstance(recorded, dict):
            continue
        kind = str(recorded.get("kind", ""))
        auth = bool(state.rerank_auth if kind == "rerank" else state.embed_auth)
        port = recorded.get("port")
        model = str(recorded.get("model") or "-")
        views.append(ServiceView(name, name, model, port if isinstance(port, int) else 0, auth))
    return views

def recorded_services(data: DataDir) -> Mapping[str, Mapping[str, object]]:
    """Per-service status as the launcher last published it ({} when it never ran)."""
    services = (data.read_status() or {}).get("services")
    return services if isinstance(services, dict) else {}
