"""embed_manage --status: each service's state and health as the launcher published it; exit 0 only if all serve."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping

from embed_launcher.datadir.directory import DataDir
from embed_launcher.manage.live import LiveStatus, ServiceView, all_services, read_live
from embed_launcher.manage.location import data_dir
from embed_launcher.reporting.console import Console
from embed_launcher.reporting.errors import EXIT_FAILURE, EXIT_OK
from embed_launcher.supervision.probe import read_progress

SERVING = ("ready", "busy")  # a ready child's health that counts as healthy
METRICS_TIMEOUT_S = 1.0  # TEI's /metrics answers from its HTTP layer at once, even while a batch runs


def inputs_in_flight(recorded: Mapping[str, object], running: bool) -> int | None:
    """The inputs queued in a running TEI now (its `te_queue_size`), or None when unknown."""
    url = recorded.get("metrics_url")
    if not running or not isinstance(url, str) or not url:
        return None
    progress = read_progress(url, METRICS_TIMEOUT_S)
    return None if progress is None else int(progress.queue_size)


def service_status(
    view: ServiceView, recorded: Mapping[str, object], live: LiveStatus, now: float
) -> dict[str, object]:
    """One service's status as the launcher published it; healthy = ready or busy, per a fresh status."""
    state = str(recorded.get("state", "unknown")) if live.alive else "stopped"
    running = state == "running" and live.fresh and not live.stopping
    health = recorded.get("health", "ready") if running else None
    gave_up = bool(recorded.get("gave_up")) and live.alive
    if gave_up:
        state = "gave up"
    draining = bool(recorded.get("draining")) and live.alive
    if draining:
        state = "draining"  # a reload replaced it: it finishes its requests in flight, then stops
    since = recorded.get("since")
    uptime = round(now - since, 1) if isinstance(since, (int, float)) and state == "running" else None
    return {
        "name": view.name, "model": view.model, "port": view.port,
        "pid": recorded.get("pid") if live.alive else None, "state": state, "health": health,
        "queue_size": recorded.get("queue_size") if health == "busy" else None,
        "idle_s": recorded.get("idle_s") if health == "busy" else None,
        "uptime_s": uptime, "restarts": recorded.get("restarts", 0),
        "last_exit": recorded.get("last_exit"), "healthy": health in SERVING, "auth": view.auth,
        "service": recorded.get("service", view.name), "replica": recorded.get("replica", 0),
        "replicas": recorded.get("replicas", 1), "gpu": recorded.get("gpu"),
        "inputs_in_flight": inputs_in_flight(recorded, running),
        "generation": recorded.get("generation", 1), "draining": draining,
    }  # fmt: skip

def serving(services: list[dict[str, object]]) -> bool:
    """Every model serves: each has a replica ready or busy. A replica restarting, or given up, while
    its siblings serve leaves its model serving (the gateway routes around it), so the container
    stays healthy; with one replica per model this is every service ready or busy."""
    models: dict[str, bool] = {}
    for s in services:
        key = str(s.get("service") or s["name"])
        models[key] = models.get(key, False) or bool(s["healthy"])
    return bool(models) and all(models.values())


def show_status(environ: Mapping[str, str], console: Console, *, as_json: bool) -> int:
    """Each enabled service's state and health; exit 0 only when all are ready or busy."""
    data = DataDir(data_dir(dict(environ)))
    now = time.time()
    live = read_live(data, now)
    state = data.read_state()
    services = [
        service_status(v, live.services.get(v.name) or {}, live, now) for v in all_services(state, environ, live)
    ]
    healthy = serving(services)
    if as_json:
        console.info(json.dumps({
            "healthy": healthy, "launcher_pid": live.launcher_pid if live.alive else None,
            "status_age_s": None if live.age_s is None else round(live.age_s, 1), "services": services,
            "generation": live.raw.get("generation", 1), "reload": live.raw.get("reload"),
        }))  # fmt: skip
    else:
        console.lines(status_table(services, live))
    return EXIT_OK if healthy else EXIT_FAILURE

def status_table(services: list[dict[str, object]], live: LiveStatus) -> list[str]:
    """Human-readable status, one line per service."""
    if not live.alive:
        head = "Launcher: not running"
    elif not live.fresh:
        since = "ever" if live.age_s is None else f"for {live.age_s:.0f} s"
        head = f"Launcher: STUCK (pid {live.launcher_pid}; status not updated {since})"
    else:
        head = f"Launcher: running (pid {live.launcher_pid})"
    # Replicas (or GPUs) add their columns: which replica, on which GPU, how many inputs it has queued.
    replicas = any(s.get("replicas", 1) != 1 or s.get("gpu") is not None for s in services)
    extra_head = f" {'REPLICA':>7} {'GPU':>4} {'INPUTS':>6}" if replicas else ""
    lines = [
        head,
        f"{'SERVICE':<8} {'MODEL':<34}{extra_head} {'PORT':>5} {'PID':>7} {'STATE':<9} {'UPTIME':>9} {'RESTARTS':>8}"
        "  HEALTH",
    ]
    for s in services:
        uptime = s["uptime_s"]
        inputs = s.get("inputs_in_flight")
        extra = (f" {s.get('replica', 0)!s:>7} {s.get('gpu') or '-'!s:>4} "
                 f"{'-' if inputs is None else inputs!s:>6}") if replicas else ""
        lines.append(
            f"{s['name']:<8} {s['model']!s:<34}{extra} {s['port']!s:>5} {s['pid'] or '-'!s:>7} {s['state']!s:<9} "
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
    if s["state"] == "gave up":
        return "GAVE UP (its siblings serve)"
    return str(s["health"]) if s["healthy"] else "UNHEALTHY"

def format_duration(seconds: float) -> str:
    """1h02m, 3m05s, 42s."""
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"
