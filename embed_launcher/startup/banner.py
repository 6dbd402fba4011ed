"""Messages users read and grep: the start and ready banners of the original, kept compatible (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from embed_launcher import __version__

if TYPE_CHECKING:  # only for annotations: embed_manage imports RULE from here and starts light
    from embed_launcher.config.services import ServiceSettings
    from embed_launcher.config.settings import Settings
    from embed_launcher.supervision.placement import Placement

RULE = "=" * 59
READY_TITLES = {
    ("embed", "rerank"): "Text embeddings & reranking server is ready",
    ("rerank",): "Reranking server is ready",
    ("embed",): "Text embeddings server is ready",
}
KEY_VARIABLES = {"embed": "EMBED_API_KEY", "rerank": "RERANK_API_KEY"}
RERANK_EXAMPLE = (
    '{"query": "What is AI?", "texts": ["AI is artificial intelligence.", "Paris is in France."], "raw_scores": false}'
)


@dataclass(frozen=True)
class Endpoint:
    """A served service as the banners show it."""

    name: str  # "embed" | "rerank"
    label: str
    model: str
    port: int
    auth: bool


def start_banner(services: tuple[Endpoint, ...], *, notices: tuple[str, ...], local_only: bool) -> list[str]:
    """What the launcher prints before it starts anything (original §1.6)."""
    lines = ["", f"embed-launcher {__version__}: text embeddings & reranking server (Hugging Face TEI)"]
    lines += list(notices)
    lines.append("Starting services...")
    for e in services:
        label = "Embeddings:" if e.name == "embed" else "Reranker:  "
        lines.append(f"  {label} model={e.model}  port={e.port}")
    if local_only:
        lines.append("  Mode: local-only (no HuggingFace downloads)")
    return lines


def not_persistent_note(data_dir: str) -> list[str]:
    """The original's warning when the data directory is not a mounted volume."""
    return [
        f"Note: {data_dir} is not mounted. Model files will be lost on",
        f"      container removal. Mount a Docker volume at {data_dir}",
        "      to persist the downloaded model across container restarts.",
    ]


def ready_banner(services: tuple[Endpoint, ...], addr: str) -> list[str]:
    """The block printed once every service answers /health (original §1.8), never with a key."""
    names = tuple(e.name for e in services)
    lines = [RULE, f" {READY_TITLES[names]}", RULE]
    for e in services:
        if e.name == "embed" or len(services) > 1:
            lines.append(f" {'Embeddings' if e.name == 'embed' else 'Reranker'}:")
        lines += [f"   Model:    {e.model}", f"   Endpoint: http://{addr}:{e.port}"]
    lines += [RULE, ""]
    for e in services:
        lines += _curl_example(e, addr) + [""]
    for e in services:
        if e.auth:
            lines += [
                f"{e.label} API key authentication is enabled.",
                f'Include header:  -H "Authorization: Bearer ${KEY_VARIABLES[e.name]}"',
            ]
    if any(e.auth for e in services):
        lines += ["Show the key with: embed_manage --showkey", ""]
    for e in services:
        lines.append(f"{e.label + ' API docs:':<21}http://{addr}:{e.port}/docs")
    lines += [
        "To set up HTTPS, put a reverse proxy in front (README: Security).",
        "Setup complete.",
    ]
    return lines


def _curl_example(e: Endpoint, addr: str) -> list[str]:
    auth = [f'    -H "Authorization: Bearer ${KEY_VARIABLES[e.name]}" \\'] if e.auth else []
    if e.name == "embed":
        title, path = "Generate embeddings:", "/v1/embeddings"
        body = f'{{"input": "Your text here", "model": "{e.model}"}}'
    else:
        title, path = "Rerank documents:", "/rerank"
        body = RERANK_EXAMPLE
    return [
        title,
        f"  curl http://{addr}:{e.port}{path} \\",
        '    -H "Content-Type: application/json" \\',
        *auth,
        f"    -d '{body}'",
    ]


def more_models_lines(services: Sequence[ServiceSettings], *, gateway: bool) -> list[str]:
    """With many models: every model behind the gateway, by the name clients ask for."""
    if not gateway:
        return []
    lines = ["Models behind the gateway (GET /v1/models lists them; ask for one by name in \"model\"):"]
    for s in services:
        default = " (default)" if s.default else ""
        lines.append(f"  {s.kind:<7} {s.served_name}{default}  port={s.port}")
    return lines


def replicas_lines(settings: Settings, placement: Placement) -> list[str]:
    """The banner's word on replicas: how many each model has, and where (nothing for single replicas)."""
    lines = []
    for s in settings.services:
        slots = placement.get(s.name, ())
        if len(slots) < 2 and not any(slot.gpu is not None for slot in slots):
            continue
        where = [f"GPU {slot.gpu}" if slot.gpu is not None else f"cores {slot.cpus[0]}-{slot.cpus[-1]}"
                 if slot.cpus else "CPU" for slot in slots]
        noun = "replica" if len(slots) == 1 else "replicas"
        lines.append(f"  {s.served_name}: {len(slots)} {noun} ({', '.join(where)})")
    return ["Replicas:", *lines] if lines else []
