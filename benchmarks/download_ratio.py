"""Bytes a model pull downloads ÷ bytes of the files TEI loads: ours vs the original's snapshot_download.

    .venv/bin/python benchmarks/download_ratio.py

Starts the local Hub stand-in (tests/fake_hub/) on 127.0.0.1 with real file lists of three
popular repositories (sizes scaled down 1000×), pulls each model per backend with
`embed_launcher.models.download.pull_model`, then with the original's pattern (`snapshot_download`
skipping only *.h5, flax_model*, tf_model*, rust_model*.bin, *.ot), and counts the body bytes the
stand-in served. Target for ours: 1.00. No internet access.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from fake_hub.repos import BENCHMARK_REPOS, SCALE
from fake_hub.server import HubStandIn

from embed_launcher.models.download import pull_model
from embed_launcher.models.progress import human_bytes

ORIGINAL_IGNORE = ["*.h5", "flax_model*", "tf_model*", "rust_model*.bin", "*.ot"]


def served(hub: HubStandIn, repo_id: str) -> int:
    """Body bytes of /resolve GETs for the repo since the last clear_log()."""
    return sum(hub.downloaded(repo_id).values())


def ours(hub: HubStandIn, repo_id: str, backend: str, cache: Path) -> int:
    hub.clear_log()
    pull_model(repo_id, cache_dir=cache, backend=backend, endpoint=hub.endpoint)
    return served(hub, repo_id)


def original(hub: HubStandIn, repo_id: str, cache: Path) -> int:
    from huggingface_hub import snapshot_download

    hub.clear_log()
    snapshot_download(repo_id=repo_id, cache_dir=cache, token=False, endpoint=hub.endpoint,
                      ignore_patterns=ORIGINAL_IGNORE)
    return served(hub, repo_id)


def main() -> None:
    rows = []
    with HubStandIn() as hub, tempfile.TemporaryDirectory() as tmp:
        for repo_id in BENCHMARK_REPOS:
            theirs = original(hub, repo_id, Path(tmp) / "original")
            for backend in ("onnx", "candle"):
                need = sum(hub.repos[repo_id].tei_files(backend).values())
                got = ours(hub, repo_id, backend, Path(tmp) / f"ours-{backend}")
                rows.append((repo_id, backend, need, got, theirs))
    print(f"The stand-in serves real sizes / {SCALE}; sizes below are scaled back up (real-equivalent).\n")
    print("| repository | backend | TEI file set | ours | ours ÷ set | original | original ÷ set |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for repo_id, backend, need, got, theirs in rows:
        real = [human_bytes(n * SCALE) for n in (need, got, theirs)]
        print(f"| {repo_id} | {backend} | {real[0]} | {real[1]} | {got / need:.2f} | {real[2]} | {theirs / need:.2f} |")


if __name__ == "__main__":
    main()
