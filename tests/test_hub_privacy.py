"""The Hub sees model metadata, listings and file downloads, and nothing else (no telemetry)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import LauncherRun, manage
from fake_hub.server import HubStandIn

pytestmark = pytest.mark.integration

# GET/HEAD /api/models/{org}/{name}[/revision|tree/{rev}] and /{org}/{name}/resolve/{rev}/{path}
ALLOWED = (
    re.compile(r"^/api/models/[^/]+/[^/]+(/(revision|tree)/[^/]+(/.*)?)?/?$"),
    re.compile(r"^/[^/]+/[^/]+/resolve/[^/]+/.+$"),
)


@pytest.fixture
def hub() -> Iterator[HubStandIn]:
    """A Hub stand-in of this test's own, so its request log holds only this test's requests."""
    with HubStandIn() as stand_in:
        yield stand_in


def unexpected(hub: HubStandIn) -> list[str]:
    return [f"{a.method} {a.path}" for a in hub.log if not any(p.match(a.path) for p in ALLOWED)]


def test_first_start_only_fetches_models(launch: Callable[..., LauncherRun], hub: HubStandIn, tmp_path: Path) -> None:
    """A first start with the reranker downloads both models and asks the Hub for nothing else."""
    # A fresh HF_HOME: huggingface_hub caches its agent registry there for a day, which would hide a fetch.
    run = launch({"RERANK_ENABLED": "true", "HF_HOME": str(tmp_path / "hf-home")})
    run.wait_for("Text embeddings & reranking server is ready", timeout_s=60)
    assert hub.downloaded("BAAI/bge-small-en-v1.5") and hub.downloaded("BAAI/bge-reranker-v2-m3")
    assert unexpected(hub) == []


def test_pullmodel_only_fetches_models(hub: HubStandIn, tmp_path: Path) -> None:
    """embed_manage --pullmodel asks the Hub for the model and nothing else."""
    env = {"HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path / "hf-home")}
    result = manage(tmp_path / "data", "--pullmodel", "sentence-transformers/all-MiniLM-L6-v2", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert hub.downloaded("sentence-transformers/all-MiniLM-L6-v2")
    assert unexpected(hub) == []
