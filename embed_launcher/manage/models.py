"""embed_manage --listmodels / --listrerankers / --pullmodel: the catalog against the cache, and pulls."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from embed_launcher.config import settings as config
from embed_launcher.config.load import load
from embed_launcher.config.settings import Settings
from embed_launcher.datadir.directory import DataDir, StateSnapshot
from embed_launcher.manage.location import data_dir
from embed_launcher.models.backend import resolve_tei_bin, tei_backend
from embed_launcher.models.cache import cached_size, ort_refused, repo_dir, verify_model
from embed_launcher.models.fileset import EMBEDDING_MODELS, RERANKER_MODELS, CatalogEntry, service_backend
from embed_launcher.models.progress import human_bytes
from embed_launcher.reporting.console import Console
from embed_launcher.reporting.errors import EXIT_CONFIG, EXIT_OK, LauncherError

LOCAL_ONLY_BLOCKED = "Error: EMBED_LOCAL_ONLY is set — model downloads are disabled. Unset it to allow downloads."
ROW = "  {mark} {repo:<40} {disk:<9} {cache:<18} {note}"

EMBED_NOTES = (
    "  - Models are downloaded from HuggingFace on first start (or via --pullmodel)",
    "    and cached in {cache}; only the files TEI loads are fetched.",
    "  - Models produce a fixed-length vector per input (embedding dimension varies by model).",
    "  - Larger models generally produce higher-quality embeddings at the cost of more RAM",
    "    and slower inference.",
    "  - BAAI/bge-m3 and nomic-embed-text-v1.5 are recommended for non-English or",
    "    multilingual workloads.",
    "  - Any HuggingFace model supported by Hugging Face TEI can be used.",
    "    See: https://huggingface.co/models?pipeline_tag=feature-extraction",
)
RERANK_NOTES = (
    "  - Reranker models are cross-encoders that score (query, document) pairs.",
    "  - They are used to re-rank retrieved documents by relevance after initial",
    "    retrieval via embeddings or keyword search.",
    "  - Enable reranking by setting RERANK_ENABLED=true in your env file.",
    "  - The reranker runs as a separate process on RERANK_PORT (default: 8001).",
    "  - Any HuggingFace cross-encoder model compatible with TEI can be used.",
    "    See: https://huggingface.co/models?pipeline_tag=text-classification&sort=downloads",
)


@dataclass(frozen=True)
class CacheMark:
    """How one model stands in the cache: complete (TEI can start offline), partial, or absent."""

    complete: bool
    on_disk_bytes: int  # whole models--org--name folder (other revisions and backends included)
    active: bool


def revision_for(settings: Settings, model: str) -> str | None:
    """The configured service's revision when ``model`` is its model; otherwise None (= main)."""
    for service in (settings.embed, settings.rerank, *settings.extra):
        if service.model == model:
            return service.revision
    return None


def active_models(state: StateSnapshot, settings: Settings, *, rerankers: bool) -> list[str]:
    """The models of this kind that are configured: the last start's default first, then the others."""
    if rerankers:
        first = state.rerank_model if state.rerank_active else None
    else:
        first = state.embed_model if state.embed_active is not False else None
    configured = [s.model for s in settings.services if (s.kind == "rerank") == rerankers]
    return list(dict.fromkeys([m for m in (first, *configured) if m]))


def cache_mark(cache: Path, model: str, settings: Settings, backend: str, active: list[str]) -> CacheMark:
    """Verify one model's TEI file set in the cache (no network)."""
    check = verify_model(cache, model, revision_for(settings, model), backend)
    size = cached_size(cache, model) if repo_dir(cache, model).is_dir() else 0
    return CacheMark(check.complete, size, model in active)


def format_row(entry: CatalogEntry, mark: CacheMark) -> str:
    """One table row: '*' for a complete file set, then the original's columns plus the cache column."""
    if mark.complete:
        cache = human_bytes(mark.on_disk_bytes)
    elif mark.on_disk_bytes:
        cache = f"partial, {human_bytes(mark.on_disk_bytes)}"
    else:
        cache = "-"
    if mark.active:
        cache += " (active)"
    note = entry.note + (" — default" if entry.default else "")
    return ROW.format(mark="*" if mark.complete else " ", repo=entry.repo_id, disk=entry.disk, cache=cache, note=note)


def backend_for(settings: config.Settings, environ: Mapping[str, str], model: str) -> str:
    """The weight format the server's TEI would load for ``model`` (the binary is inspected if found).

    The model a service is configured with follows that service's flags (see models.service_backend).
    """
    try:
        tei_bin: str | None = resolve_tei_bin(settings.tei_bin, environ.get("PATH", os.defpath))
    except LauncherError:
        tei_bin = None  # e.g. embed_manage on a machine without TEI: decide from the environment
    backend = tei_backend(settings.backend, tei_bin, environ)
    refused = ort_refused(data_dir(dict(environ)), model)
    for s in (settings.embed, settings.rerank, *settings.extra):
        if s.model == model:
            dtype, pooling = s.tei_arg("--dtype"), s.tei_arg("--pooling")
            return service_backend(backend, setting=settings.backend, dtype=dtype, pooling=pooling, ort_refused=refused)
    return service_backend(backend, setting=settings.backend, dtype=None, pooling=None, ort_refused=refused)


def list_models(environ: Mapping[str, str], console: Console, *, rerankers: bool) -> int:
    """The original's recommended list, with each model's cache state and the active one marked."""
    settings = load(environ, console.warn)
    cache = data_dir(dict(environ))
    active = active_models(DataDir(cache).read_state(), settings, rerankers=rerankers)
    backend = backend_for(settings, environ, active[0] if active else "")
    catalog = list(RERANKER_MODELS if rerankers else EMBEDDING_MODELS)
    listed = {e.repo_id for e in catalog}
    catalog += [CatalogEntry(m, None, "(not in the recommended list)") for m in active if m not in listed]
    title = "Recommended reranker (cross-encoder) models for TEI:" if rerankers else (
        "Recommended embedding models (all TEI-compatible):")
    lines = ["", title, "", ROW.format(mark=" ", repo="Model ID", disk="Weights", cache="In cache", note="Notes"),
             ROW.format(mark=" ", repo="--------", disk="-------", cache="--------", note="-----")]
    lines += [format_row(e, cache_mark(cache, e.repo_id, settings, backend, active)) for e in catalog]
    lines += ["", f"  * = the files TEI loads ({backend} backend) are complete in {cache}.", "", "Notes:"]
    lines += [n.format(cache=cache) for n in (RERANK_NOTES if rerankers else EMBED_NOTES)]
    what = "a reranker model before enabling" if rerankers else "a model before switching"
    lines += ["", f"Use '--pullmodel <model>' to pre-download {what}.", ""]
    console.lines(lines)
    return EXIT_OK


def pull(environ: Mapping[str, str], console: Console, model: str) -> int:
    """Download TEI's file set of ``model`` into the data dir; exit 1 (and no hint) on failure."""
    model = model.strip()
    if config.MODEL.parse(model) is None:
        raise LauncherError(f"Error: '{model}' is not a model ID: use {config.MODEL.rule}.", EXIT_CONFIG)
    settings = load(environ, console.warn)
    cache = data_dir(dict(environ))
    backend = backend_for(settings, environ, model)
    revision = revision_for(settings, model)
    if settings.local_only:
        return pull_local_only(console, cache, model, revision, backend)
    console.lines(["", f"Downloading model '{model}' to {cache}...",
                   "This may take several minutes depending on model size and network speed.", ""])
    from embed_launcher.models.download import pull_model  # heavy (huggingface_hub): only when pulling
    from embed_launcher.models.progress import default_progress

    result = pull_model(model, cache_dir=cache, backend=backend, revision=revision, token=settings.hf_token,
                        endpoint=environ.get("HF_ENDPOINT") or None, progress=default_progress(console.out))
    if result.warning:
        console.warn(result.warning)
    if result.from_cache:
        done = f"  Model '{model}' is complete in the cache (updates could not be checked)."
    else:
        done = f"  Model '{model}' downloaded successfully."
    console.lines([done, f"  Cache location: {cache}",
                   f"  Downloaded: {human_bytes(result.downloaded_bytes)}; TEI's file set: "
                   f"{human_bytes(result.fileset_bytes)} ({backend} backend)."])
    console.lines(activation_hint(model))
    return EXIT_OK


def pull_local_only(console: Console, cache: Path, model: str, revision: str | None, backend: str) -> int:
    """Local-only: no download, but a model already complete in the cache is a success."""
    check = verify_model(cache, model, revision, backend)
    if not check.complete:
        raise LauncherError(LOCAL_ONLY_BLOCKED)
    console.lines([f"Model '{model}' is already complete in {cache} ({human_bytes(check.size_bytes)}); "
                   "EMBED_LOCAL_ONLY is set, so updates were not checked."])
    console.lines(activation_hint(model))
    return EXIT_OK


def activation_hint(model: str) -> list[str]:
    """The original's closing lines after a successful pull."""
    return ["", f"To activate this model, set EMBED_MODEL={model} (or RERANK_MODEL={model})",
            "in your env file (embed.env) and restart the container.", ""]
