"""The HF cache under the data dir: resolve a snapshot, verify TEI's file set, record pulls (no network)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from embed_launcher.datadir.atomic import atomic_write
from embed_launcher.models import fileset as models
from embed_launcher.reporting.errors import LauncherError

DEFAULT_REVISION = "main"
MANIFEST_DIR = ".embed-launcher"  # inside models--org--name/, beside blobs/ refs/ snapshots/
ORT_REFUSED = "ort-refused"
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_WEIGHTS_RULE = "weights (model.safetensors, model.safetensors.index.json + shards, pytorch_model.bin or model.onnx)"


@dataclass(frozen=True)
class CacheState:
    """What the cache holds for one repo, before any judgement about completeness."""

    repo_dir: Path
    exists: bool
    commit: str | None  # what the revision resolves to locally (refs/<rev>, or the sha itself)
    snapshot_dir: Path | None  # snapshots/<commit>, when that folder exists


@dataclass(frozen=True)
class Verification:
    """Whether TEI can start from the cache alone, and if not, what is missing."""

    complete: bool
    snapshot_dir: Path | None
    missing: tuple[str, ...]
    size_bytes: int  # bytes of the file set present in the snapshot


def require_complete(cache_dir: Path, repo_id: str, revision: str | None, backend: str, kind: str) -> Verification:
    """The verification of a model that must already be complete (local-only), else one actionable error."""
    check = verify_model(cache_dir, repo_id, revision, backend)
    if check.complete and check.snapshot_dir is not None:
        return check
    state = "is not complete" if repo_dir(cache_dir, repo_id).is_dir() else "is not found"
    raise LauncherError(
        f"Error: EMBED_LOCAL_ONLY is set but {kind} '{repo_id}' {state} in {cache_dir} "
        f"(missing: {', '.join(check.missing)}). Pre-download it first: embed_manage --pullmodel {repo_id}"
    )


def repo_dir(cache_dir: Path, repo_id: str) -> Path:
    """``<cache>/models--org--name``, the folder both huggingface_hub and TEI's hf-hub use."""
    return Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))


def inspect_cache(cache_dir: Path, repo_id: str, revision: str | None = None) -> CacheState:
    """Resolve ``revision`` (default "main") to a local snapshot, without judging it."""
    folder = repo_dir(cache_dir, repo_id)
    rev = revision or DEFAULT_REVISION
    commit = _read_ref(folder / "refs" / rev)
    if commit is None and _COMMIT.match(rev):
        commit = rev
    snapshot = folder / "snapshots" / commit if commit else None
    return CacheState(folder, folder.is_dir(), commit, snapshot if snapshot and snapshot.is_dir() else None)


def verify_model(cache_dir: Path, repo_id: str, revision: str | None, backend: str) -> Verification:
    """Is the whole TEI file set for ``backend`` in ONE snapshot, every link resolving to a blob?

    With a manifest from our own pull, the file set is exactly the one recorded. Without one
    (a cache made by TEI or another tool) the rule is: config.json, tokenizer.json and one
    complete weight format (every shard of an index).
    """
    state = inspect_cache(cache_dir, repo_id, revision)
    if state.snapshot_dir is None:
        return Verification(False, None, ("config.json", "tokenizer.json", _WEIGHTS_RULE), 0)
    manifest = read_manifest(cache_dir, repo_id, state.commit or "", backend)
    snapshot = state.snapshot_dir
    if manifest is not None:
        missing = tuple(f for f in manifest if not (snapshot / f).is_file())
        present = [f for f in manifest if f not in missing]
    else:
        missing, present = _verify_by_rule(snapshot, backend)
    size = sum((snapshot / f).stat().st_size for f in present)
    return Verification(not missing, snapshot, missing, size)


def manifest_path(cache_dir: Path, repo_id: str, commit: str, backend: str) -> Path:
    """Where a successful pull records its file set: ``models--x--y/.embed-launcher/<commit>.<backend>.json``."""
    return repo_dir(cache_dir, repo_id) / MANIFEST_DIR / f"{commit}.{backend}.json"


def write_manifest(cache_dir: Path, repo_id: str, commit: str, backend: str, files: dict[str, int]) -> Path:
    """Record the pulled file set (path → size) atomically, so later checks need no network."""
    path = manifest_path(cache_dir, repo_id, commit, backend)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"repo_id": repo_id, "commit": commit, "backend": backend, "files": files}
    atomic_write(path, json.dumps(body, indent=1, sort_keys=True) + "\n")
    return path


def ort_refused_path(cache_dir: Path, repo_id: str) -> Path:
    """The marker saying TEI's ONNX backend could not run this model (so candle's weights are needed)."""
    return repo_dir(cache_dir, repo_id) / MANIFEST_DIR / ORT_REFUSED


def mark_ort_refused(cache_dir: Path, repo_id: str) -> Path:
    """Remember that TEI's ONNX backend refused this model: later starts fetch candle's weights."""
    path = ort_refused_path(cache_dir, repo_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, "TEI's ONNX Runtime backend could not start this model; candle's weights are used.\n")
    return path


def ort_refused(cache_dir: Path, repo_id: str) -> bool:
    """Whether TEI's ONNX backend has refused this model before (mark_ort_refused)."""
    return ort_refused_path(cache_dir, repo_id).is_file()


def read_manifest(cache_dir: Path, repo_id: str, commit: str, backend: str) -> list[str] | None:
    """The recorded file list, or None when there is no (readable) manifest."""
    try:
        body = json.loads(manifest_path(cache_dir, repo_id, commit, backend).read_text())
        files = body["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return sorted(files) if isinstance(files, dict) and files else None


def cached_size(cache_dir: Path, repo_id: str) -> int:
    """Bytes the repo's folder takes on disk (blobs and partial downloads; links count nothing)."""
    total = 0
    for root, _dirs, names in os.walk(repo_dir(cache_dir, repo_id)):
        for name in names:
            st = os.lstat(os.path.join(root, name))
            total += st.st_size if not os.path.islink(os.path.join(root, name)) else 0
    return total


def _read_ref(path: Path) -> str | None:
    try:
        commit = path.read_text().strip()
    except OSError:
        return None
    return commit if _COMMIT.match(commit) else None


def _verify_by_rule(snapshot: Path, backend: str) -> tuple[tuple[str, ...], list[str]]:
    have = {str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file()}
    missing = [f for f in ("config.json", "tokenizer.json") if f not in have]
    weights = _complete_weights(snapshot, have, backend)
    if weights is None:
        missing.append(_WEIGHTS_RULE)
    present = [f for f in ("config.json", "tokenizer.json") if f in have] + (weights or [])
    return tuple(missing), present


def _complete_weights(snapshot: Path, have: set[str], backend: str) -> list[str] | None:
    if backend == "onnx":
        onnx = sorted(f for f in have if f.startswith(models.ONNX_PREFIXES))
        if onnx:
            return onnx
    if models.SAFETENSORS in have:
        return [models.SAFETENSORS]
    if models.SAFETENSORS_INDEX in have:
        try:
            shards = models.shards_from_index(json.loads((snapshot / models.SAFETENSORS_INDEX).read_text()))
        except (OSError, ValueError):
            return None
        return [models.SAFETENSORS_INDEX, *shards] if set(shards) <= have else None
    return [models.PYTORCH_BIN] if models.PYTORCH_BIN in have else None
