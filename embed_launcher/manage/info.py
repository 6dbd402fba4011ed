"""embed_manage --showinfo / --status: what runs, where, and whether it answers right now."""

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
from embed_launcher.supervision.probe import probe_health

RULE = "=" * 59
TITLES = {
    (True, True): " EmbedCrate: Text Embeddings & Reranking Server",
    (True, False): " EmbedCrate: Text Embeddings Server",
    (False, True): " EmbedCrate: Reranking Server",
}
PROBE_TIMEOUT_S = 3.0


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
    for s in services:
        if not probe_health(health_url(s.port, recorded.get(s.name)), PROBE_TIMEOUT_S):
            raise LauncherError(
                f"Error: {s.label} server is not responding on port {s.port}. Is the container fully started?"
            )
    addr = state.server_addr or "<server ip>"
    names = {s.name for s in services}
    lines = ["", RULE, TITLES[("embed" in names, "rerank" in names)], RULE]
    for s in services:
        lines += [f" {s.label}:", f"   Model:    {s.model}", f"   Endpoint: http://{addr}:{s.port}"]
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


def service_status(
    view: ServiceView, recorded: Mapping[str, object], launcher_alive: bool, now: float
) -> dict[str, object]:
    """One service's status: recorded by the launcher, plus a live /health probe."""
    healthy = probe_health(health_url(view.port, recorded), PROBE_TIMEOUT_S)
    since = recorded.get("since")
    state = str(recorded.get("state", "unknown")) if launcher_alive else "stopped"
    uptime = round(now - since, 1) if isinstance(since, (int, float)) and state == "running" else None
    return {
        "name": view.name, "model": view.model, "port": view.port,
        "pid": recorded.get("pid") if launcher_alive else None, "state": state,
        "uptime_s": uptime, "restarts": recorded.get("restarts", 0),
        "last_exit": recorded.get("last_exit"), "healthy": healthy, "auth": view.auth,
    }  # fmt: skip


def show_status(environ: Mapping[str, str], console: Console, *, as_json: bool) -> int:
    """Each enabled service's state and live health; exit 0 only when all are healthy."""
    data = DataDir(data_dir(dict(environ)))
    status = data.read_status() or {}
    launcher_pid = status.get("launcher_pid")
    alive = pid_alive(launcher_pid) or os.getpid() == launcher_pid
    recorded = status.get("services") or {}
    now = time.time()
    services = [
        service_status(v, recorded.get(v.name) or {}, alive, now) for v in enabled_services(data.read_state(), environ)
    ]
    healthy = bool(services) and all(s["healthy"] for s in services)
    if as_json:
        console.info(
            json.dumps({"healthy": healthy, "launcher_pid": launcher_pid if alive else None, "services": services})
        )
    else:
        console.lines(status_table(services, alive, launcher_pid))
    return EXIT_OK if healthy else EXIT_FAILURE


def status_table(services: list[dict[str, object]], alive: bool, launcher_pid: object) -> list[str]:
    """Human-readable status, one line per service."""
    head = f"Launcher: {'running (pid ' + str(launcher_pid) + ')' if alive else 'not running'}"
    lines = [
        head,
        f"{'SERVICE':<8} {'MODEL':<34} {'PORT':>5} {'PID':>7} {'STATE':<9} {'UPTIME':>9} {'RESTARTS':>8}  HEALTH",
    ]
    for s in services:
        uptime = s["uptime_s"]
        lines.append(
            f"{s['name']:<8} {s['model']!s:<34} {s['port']!s:>5} {s['pid'] or '-'!s:>7} {s['state']!s:<9} "
            f"{(format_duration(float(uptime)) if isinstance(uptime, (int, float)) else '-'):>9} {s['restarts']!s:>8}  "
            f"{'healthy' if s['healthy'] else 'UNHEALTHY'}"
        )
    return lines


def format_duration(seconds: float) -> str:
    """1h02m, 3m05s, 42s."""
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"
