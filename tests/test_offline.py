"""Models end to end: pre-pull with embed_manage, then a local-only start that makes zero network calls.

The issue's promise: `embed_manage --pullmodel BAAI/bge-m3` fetches only what TEI will load, and a
later `EMBED_LOCAL_ONLY=true embed-launcher` starts it without touching the network; a model that
is complete in the cache starts even when the Hub is down.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import FAKE_TEI, LauncherRun, manage
from fake_hub.server import HubStandIn

pytestmark = pytest.mark.integration

Launch = Callable[..., LauncherRun]
MODEL = "BAAI/bge-m3"


def pull_with_manage(data_dir: Path, hub: HubStandIn, model: str) -> None:
    """`embed_manage --pullmodel` as `docker exec` would run it, against the Hub stand-in."""
    result = manage(data_dir, "--pullmodel", model, env={"HF_ENDPOINT": hub.endpoint})
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Model '{model}' downloaded successfully." in result.stdout


def test_pull_then_local_only_start_makes_zero_network_calls(launch: Launch, hub: HubStandIn, tmp_path: Path) -> None:
    """Pre-pulled bge-m3 serves in local-only mode; the Hub stand-in sees no request during the start."""
    data = tmp_path / "data"
    data.mkdir()
    hub.clear_log()
    pull_with_manage(data, hub, MODEL)
    assert hub.downloaded(MODEL) == hub.repos[MODEL].tei_files("onnx")  # nothing TEI would not load
    hub.clear_log()
    run = launch({"EMBED_MODEL": MODEL, "EMBED_LOCAL_ONLY": "true", "EMBED_SERVER_ADDR": ""}, data_dir=data)
    run.wait_for("Text embeddings server is ready")
    assert hub.log == []
    assert "Mode: local-only (no HuggingFace downloads)" in run.output()
    argv = run.child_argv("embed")
    model_id = Path(argv[argv.index("--model-id") + 1])
    assert model_id.is_dir() and model_id.parent.name == "snapshots"  # TEI reads a directory: no Hub access
    assert argv[argv.index("--served-model-name") + 1] == MODEL
    status = json.loads((data / ".status.json").read_text())
    assert status["services"]["embed"]["state"] == "running"


def test_local_only_without_the_model_names_the_fix(launch: Launch, hub: HubStandIn) -> None:
    """Local-only and nothing cached: exit 1, the missing files and the exact pull command; no request."""
    hub.clear_log()
    run = launch({"EMBED_LOCAL_ONLY": "true"})
    assert run.wait_exit() == 1
    out = run.output()
    assert "EMBED_LOCAL_ONLY is set but model 'BAAI/bge-small-en-v1.5'" in out
    assert "embed_manage --pullmodel BAAI/bge-small-en-v1.5" in out and "config.json" in out
    assert "[embed]" not in out and hub.log == []


def test_complete_cached_model_starts_with_the_hub_down(launch: Launch, tmp_path: Path) -> None:
    """The Hub unreachable but the file set complete: one warning, then the server starts."""
    data = tmp_path / "data"
    data.mkdir()
    with HubStandIn() as private_hub:
        pull_with_manage(data, private_hub, "BAAI/bge-small-en-v1.5")
        endpoint = private_hub.endpoint
    run = launch({"HF_ENDPOINT": endpoint}, data_dir=data)  # the stand-in is stopped: connection refused
    run.wait_for("Text embeddings server is ready")
    assert run.output().count("without checking for updates") == 1


def test_first_start_downloads_with_progress_and_tei_gets_the_snapshot(launch: Launch, hub: HubStandIn) -> None:
    """A fresh data dir: the note, percentage lines, then TEI is given the snapshot directory."""
    run = launch({"RERANK_ENABLED": "true"})
    run.wait_for("Text embeddings & reranking server is ready")
    out = run.output()
    assert "Note: Model 'BAAI/bge-small-en-v1.5' not found in cache." in out
    assert "Downloading BAAI/bge-small-en-v1.5:" in out and "100%" in out
    snapshot = run.data_dir / "models--BAAI--bge-small-en-v1.5" / "snapshots"
    assert any(snapshot.iterdir())


def test_status_during_a_first_download_says_preparing(launch: Launch) -> None:
    """While models download, --status shows the launcher alive, services 'preparing', and exits 1."""
    with HubStandIn(chunk_delay_s=0.2) as slow_hub:
        run = launch({"HF_ENDPOINT": slow_hub.endpoint})
        run.wait_for("Downloading BAAI/bge-small-en-v1.5:")
        result = manage(run, "--status", "--json")
        run.signal(signal.SIGTERM)
        assert run.wait_exit() == 0
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["launcher_pid"] == run.proc.pid
    assert [(s["name"], s["state"], s["healthy"]) for s in report["services"]] == [("embed", "preparing", False)]


def test_a_float16_service_on_the_cpu_image_gets_safetensors(launch: Launch, tmp_path: Path) -> None:
    """TEI's ORT backend refuses float16 and falls back to candle: the launcher downloads candle's set."""
    with HubStandIn() as private_hub:
        run = launch({"HF_ENDPOINT": private_hub.endpoint, "EMBED_DTYPE": "float16"})
        run.wait_for("Text embeddings server is ready")
        model = "BAAI/bge-small-en-v1.5"
        assert private_hub.downloaded(model) == private_hub.repos[model].tei_files("candle")
        assert "model.safetensors" in private_hub.downloaded(model)


def onnx_refusing_tei(directory: Path) -> Path:
    """A TEI whose ONNX backend cannot run the model: without candle weights in the snapshot it fails
    exactly as TEI does (ERROR line, then "Could not create backend / Weights not found", exit 1)."""
    script = directory / "tei-onnx-refusing"
    script.write_text(
        "#!/bin/sh\n"
        'model=""; prev=""\n'
        'for a in "$@"; do [ "$prev" = "--model-id" ] && model="$a"; prev="$a"; done\n'
        'if [ ! -e "$model/model.safetensors" ] && [ ! -e "$model/pytorch_model.bin" ]; then\n'
        "  echo '2026-01-01T00:00:00.000000Z ERROR text_embeddings_backend: backends/src/lib.rs:489:"
        " Could not start ORT backend: Failed to load model'\n"
        "  printf 'Error: Could not create backend\\n\\nCaused by:\\n    Weights not found: model.safetensors\\n' >&2\n"
        "  exit 1\n"
        "fi\n"
        f'exec {sys.executable} {FAKE_TEI} "$@"\n'
    )
    script.chmod(0o755)
    return script


def test_an_onnx_refusal_is_learned_and_the_next_start_uses_candle_weights(
    launch: Launch, hub: HubStandIn, tei_dir: Path, tmp_path: Path
) -> None:
    """First start: TEI's ORT refuses the model, the launcher gives up with a hint and records it.
    Second start (a restart policy): candle's weights are downloaded and the server is ready."""
    data = tmp_path / "data"
    tei = onnx_refusing_tei(tei_dir)
    first = launch({"EMBED_START_RETRIES": "1"}, tei=tei, data_dir=data)
    assert first.wait_exit() == 1
    assert "the next start downloads its safetensors" in first.output(), first.output()
    model = "BAAI/bge-small-en-v1.5"
    assert (data / "models--BAAI--bge-small-en-v1.5" / ".embed-launcher" / "ort-refused").is_file()
    second = launch(tei=tei, data_dir=data)
    second.wait_for("Text embeddings server is ready")
    argv = second.child_argv("embed")
    snapshot = Path(argv[argv.index("--model-id") + 1])
    in_snapshot = {str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file()}
    assert hub.repos[model].tei_files("candle").keys() <= in_snapshot  # candle's weights are there now
