"""embed_manage --showinfo / --status / --alive: what runs, where, and how it is doing.

--status and --alive read the live status the launcher publishes (`.status.json`, rewritten at
least every heartbeat) instead of probing TEI themselves: the launcher already knows a busy TEI
(its /health queued behind inference, work still completing on /metrics) from a dead one, and a
probe of our own would call a busy server dead and put one more request in its backend's queue.
A status older than a few heartbeats means the launcher's loop is stuck: then nothing is healthy.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

from embed_launcher.datadir.directory import DataDir, StateSnapshot
from embed_launcher.manage.location import data_dir
from embed_launcher.reporting.console import Console
from embed_launcher.reporting.errors import EXIT_FAILURE, EXIT_OK, LauncherError
from embed_launcher.startup.banner import RULE
from embed_launcher.supervision.probe import probe_health

TITLES = {
    (True, True): " EmbedCrate: Text Embeddings & Reranking Server",
    (True, False): " EmbedCrate: Text Embeddings Server",
    (False, True): " EmbedCrate: Reranking Server",
}
PROBE_TIMEOUT_S = 3.0
STALE_AFTER_HEARTBEATS = 6  # a live status this many heartbeats old: the launcher's loop is stuck
DEFAULT_HEARTBEAT_S = 5.0
SERVING = ("ready", "busy")  # a ready child's health that counts as healthy


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


def all_services(state: StateSnapshot, environ: Mapping[str, str], live: LiveStatus) -> list[ServiceView]:
    """The enabled services of the state files, then every other child the launcher runs (models, gateway)."""
    views = enabled_services(state, environ)
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


def health_url(port: int, recorded: Mapping[str, object] | None = None) -> str:
    """Where to probe: the URL the launcher recorded (it knows EMBED_HOST), else loopback."""
    url = (recorded or {}).get("health_url")
    return url if isinstance(url, str) and url.startswith("http://") else f"http://127.0.0.1:{port}/health"


def recorded_services(data: DataDir) -> Mapping[str, Mapping[str, object]]:
    """Per-service status as the launcher last published it ({} when it never ran)."""
    services = (data.read_status() or {}).get("services")
    return services if isinstance(services, dict) else {}


def show_info(environ: Mapping[str, str], console: Console) -> int:
    """The original's info box: endpoints and examples, once every service answers /health."""
    data = DataDir(data_dir(dict(environ)))
    state, recorded = data.read_state(), recorded_services(data)
    services = enabled_services(state, environ)
    live = read_live(data, time.time())
    for s in services:
        busy = live.fresh and (recorded.get(s.name) or {}).get("health") == "busy"
        if not busy and not probe_health(health_url(s.port, recorded.get(s.name)), PROBE_TIMEOUT_S):
            raise LauncherError(
                f"Error: {s.label} server is not responding on port {s.port}. Is the container fully started?"
            )
    addr = state.server_addr or "<server ip>"
    names = {s.name for s in services}
    lines = ["", RULE, TITLES[("embed" in names, "rerank" in names)], RULE]
    for s in services:
        lines += [f" {s.label}:", f"   Model:    {s.model}", f"   Endpoint: http://{addr}:{s.port}"]
    lines += more_models(recorded, names)
    lines += [RULE, "", "API endpoints:"]
    for s in services:
        lines += endpoint_lines(s, f"http://{addr}:{s.port}")
    lines.append("")
    for s in services:
        lines += example_lines(s, f"http://{addr}:{s.port}")
    if any(s.auth for s in services):
        lines += ["Use '--showkey' to display the API key.", ""]
    lines += [
        "To change the active model:",
        "  1. Pre-download: embed_manage --pullmodel <model>   (the server keeps running)",
        "  2. Set EMBED_MODEL=<model> (or RERANK_MODEL=<model>) in your env file and restart.",
        "",
    ]
    console.lines(lines)
    return EXIT_OK


def more_models(recorded: Mapping[str, Mapping[str, object]], shown: set[str]) -> list[str]:
    """The other models the launcher runs (behind the gateway), by kind."""
    others = [(str(r.get("kind")), str(r.get("model"))) for name, r in recorded.items()
              if name not in shown and r.get("kind") not in (None, "gateway")]  # fmt: skip
    if not others:
        return []
    return [" Also serving (ask for one by name in \"model\"; GET /v1/models lists them):"] + [
        f"   {kind:<7} {model}" for kind, model in others
    ]


def endpoint_lines(s: ServiceView, base: str) -> list[str]:
    """The routes one service offers."""
    if s.name == "embed":
        routes = [f"  POST {base}/v1/embeddings   (OpenAI-compatible)", f"  POST {base}/embed"]
    else:
        routes = [f"  POST {base}/rerank"]
    return routes + [f"  GET  {base}/info", f"  GET  {base}/docs     (interactive docs)"]


def example_lines(s: ServiceView, base: str) -> list[str]:
    """A curl example for one service, with the auth header when its key is on."""
    if s.name == "embed":
        title, path = "Example — generate embeddings:", "/v1/embeddings"
        body = f'{{"input": "Your text here", "model": "{s.model}"}}'
    else:
        title, path = "Example — rerank documents:", "/rerank"
        body = '{"query": "What is AI?", "texts": ["AI is...", "The weather is..."], "raw_scores": false}'
    header = ['    -H "Authorization: Bearer <api-key>" \\'] if s.auth else []
    return [title, f"  curl {base}{path} \\", "    -H 'Content-Type: application/json' \\", *header,
            f"    -d '{body}'", ""]


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
    )


def service_status(
    view: ServiceView, recorded: Mapping[str, object], live: LiveStatus, now: float
) -> dict[str, object]:
    """One service's status as the launcher published it; healthy = ready or busy, per a fresh status."""
    state = str(recorded.get("state", "unknown")) if live.alive else "stopped"
    running = state == "running" and live.fresh and not live.stopping
    health = recorded.get("health", "ready") if running else None
    since = recorded.get("since")
    uptime = round(now - since, 1) if isinstance(since, (int, float)) and state == "running" else None
    return {
        "name": view.name, "model": view.model, "port": view.port,
        "pid": recorded.get("pid") if live.alive else None, "state": state, "health": health,
        "queue_size": recorded.get("queue_size") if health == "busy" else None,
        "idle_s": recorded.get("idle_s") if health == "busy" else None,
        "uptime_s": uptime, "restarts": recorded.get("restarts", 0),
        "last_exit": recorded.get("last_exit"), "healthy": health in SERVING, "auth": view.auth,
    }  # fmt: skip


def show_status(environ: Mapping[str, str], console: Console, *, as_json: bool) -> int:
    """Each enabled service's state and health; exit 0 only when all are ready or busy."""
    data = DataDir(data_dir(dict(environ)))
    now = time.time()
    live = read_live(data, now)
    state = data.read_state()
    services = [
        service_status(v, live.services.get(v.name) or {}, live, now) for v in all_services(state, environ, live)
    ]
    healthy = bool(services) and all(s["healthy"] for s in services)
    if as_json:
        console.info(json.dumps({
            "healthy": healthy, "launcher_pid": live.launcher_pid if live.alive else None,
            "status_age_s": None if live.age_s is None else round(live.age_s, 1), "services": services,
        }))  # fmt: skip
    else:
        console.lines(status_table(services, live))
    return EXIT_OK if healthy else EXIT_FAILURE


def show_alive(environ: Mapping[str, str], console: Console) -> int:
    """Exit 0 while the launcher runs and its loop keeps the live status fresh (a liveness probe).

    TEI children that are busy, restarting or still downloading do not matter: the launcher
    heals its children itself; only a launcher that is gone or stuck needs a restart from outside.
    """
    live = read_live(DataDir(data_dir(dict(environ))), time.time())
    if not live.alive:
        raise LauncherError("Error: the launcher is not running (no live process for this data directory).")
    if not live.fresh:
        age = "at an unknown time" if live.age_s is None else f"{live.age_s:.0f} s ago"
        raise LauncherError(
            f"Error: the launcher (pid {live.launcher_pid}) last updated its status {age}"
            f" (limit {live.stale_after_s:g} s): its loop is stuck."
        )
    console.info(f"alive: launcher pid {live.launcher_pid}, status updated {live.age_s:.0f} s ago")
    return EXIT_OK


def status_table(services: list[dict[str, object]], live: LiveStatus) -> list[str]:
    """Human-readable status, one line per service."""
    if not live.alive:
        head = "Launcher: not running"
    elif not live.fresh:
        since = "ever" if live.age_s is None else f"for {live.age_s:.0f} s"
        head = f"Launcher: STUCK (pid {live.launcher_pid}; status not updated {since})"
    else:
        head = f"Launcher: running (pid {live.launcher_pid})"
    lines = [
        head,
        f"{'SERVICE':<8} {'MODEL':<34} {'PORT':>5} {'PID':>7} {'STATE':<9} {'UPTIME':>9} {'RESTARTS':>8}  HEALTH",
    ]
    for s in services:
        uptime = s["uptime_s"]
        lines.append(
            f"{s['name']:<8} {s['model']!s:<34} {s['port']!s:>5} {s['pid'] or '-'!s:>7} {s['state']!s:<9} "
            f"{(format_duration(float(uptime)) if isinstance(uptime, (int, float)) else '-'):>9} {s['restarts']!s:>8}  "
            f"{health_text(s)}"
        )
    return lines


def health_text(s: Mapping[str, object]) -> str:
    """ready, busy (queue 12, 35 s since work completed), or UNHEALTHY."""
    if s["health"] == "busy":
        idle = s["idle_s"]
        idle_text = f", {float(idle):.0f} s since work completed" if isinstance(idle, (int, float)) else ""
        return f"busy (queue {s['queue_size']}{idle_text})"
    return str(s["health"]) if s["healthy"] else "UNHEALTHY"


def format_duration(seconds: float) -> str:
    """1h02m, 3m05s, 42s."""
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"
