"""embed_manage --showinfo: the original's info box (endpoints, models, examples) once every service answers."""

from __future__ import annotations

import time
from collections.abc import Mapping

from embed_launcher.datadir.directory import DataDir
from embed_launcher.manage.live import ServiceView, enabled_services, read_live, recorded_services
from embed_launcher.manage.location import data_dir
from embed_launcher.reporting.console import Console
from embed_launcher.reporting.errors import EXIT_OK, LauncherError
from embed_launcher.startup.banner import RULE
from embed_launcher.supervision.probe import probe_health

TITLES = {
    (True, True): " EmbedCrate: Text Embeddings & Reranking Server",
    (True, False): " EmbedCrate: Text Embeddings Server",
    (False, True): " EmbedCrate: Reranking Server",
}
PROBE_TIMEOUT_S = 3.0


def health_url(port: int, recorded: Mapping[str, object] | None = None) -> str:
    """Where to probe: the URL the launcher recorded (it knows EMBED_HOST), else loopback."""
    url = (recorded or {}).get("health_url")
    return url if isinstance(url, str) and url.startswith("http://") else f"http://127.0.0.1:{port}/health"

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
