"""Reload without a restart, end to end: the real launcher, the TEI stand-in, the gateway, steady load.

Under load on model A: add model B, switch A's revision (allowed by allow_vector_change), remove B, with
0 failed requests for A throughout and both generations in the live status during the switch; a reload
whose new TEI fails to load leaves A serving; the vector-space guard and a port change are refused.
"""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import live_client
import pytest
from conftest import LauncherRun, manage, wait_until
from live_client import Load, live_status

pytestmark = pytest.mark.integration

Launch = Callable[..., LauncherRun]
KEY = "reload-key"
A = '[[models]]\nmodel = "BAAI/bge-small-en-v1.5"\nalias = "a"\n'
A_MAIN = A + 'revision = "main"\nallow_vector_change = true\n'
A_MAIN_REFUSED = A + 'revision = "main"\n'
A_BROKEN = A + 'dtype = "bfloat16"\n'  # the TEI stand-in refuses it (exit 2): a new TEI that fails to load
B = '[[models]]\nmodel = "BAAI/bge-m3"\nalias = "b"\n'


def embed(port: int, model: str) -> int:
    return live_client.embed(port, model, ["hello"], key=KEY)


def load_on_a(run: LauncherRun) -> Load:
    """Requests to model ``a``, back to back, from two threads."""
    return Load(lambda: embed(run.ports["EMBED_PORT"], "a"))


def status(run: LauncherRun) -> dict[str, Any]:
    return live_status(run.data_dir)


def reload_via_sighup(run: LauncherRun, models_file: Path, text: str, seen: int) -> None:
    models_file.write_text(text)
    run.signal(signal.SIGHUP)
    wait_until(lambda: run.output().count("Reload complete") + run.output().count("Reload failed") > seen, 30)


@pytest.fixture
def served(launch: Launch, tmp_path: Path) -> tuple[LauncherRun, Path]:
    models_file = tmp_path / "models.toml"
    models_file.write_text(A)
    run = launch({"EMBED_MODELS_FILE": str(models_file), "EMBED_API_KEY": KEY, "EMBED_DRAIN_TIMEOUT": "5",
                  "EMBED_GATEWAY_WAIT": "20"})
    run.wait_for("server is ready", timeout_s=60)
    return run, models_file


def test_add_switch_remove_under_load_without_a_failed_request(served: tuple[LauncherRun, Path]) -> None:
    run, models_file = served
    port = run.ports["EMBED_PORT"]
    with load_on_a(run) as load:
        load.more()
        # Add B: A is not touched (same pid), B serves.
        a_pid = status(run)["services"]["embed"]["pid"]
        reload_via_sighup(run, models_file, A + B, 0)
        assert "Reload complete: configuration 2 serves (added embed-b (BAAI/bge-m3))." in run.output()
        assert status(run)["services"]["embed"]["pid"] == a_pid
        assert embed(port, "b") == 200
        load.more()
        # Switch A's revision: both generations show while the new TEI starts and the old one drains.
        models_file.write_text(A_MAIN + B)
        run.signal(signal.SIGHUP)
        both = wait_until(lambda: {"embed", "embed@3"} <= set(status(run).get("services", {})), 20)
        assert both
        services = status(run)["services"]
        assert services["embed"]["generation"] == 1 and services["embed@3"]["generation"] == 3
        wait_until(lambda: "Reload complete: configuration 3" in run.output(), 30)
        # The live status is published just after the line: poll it (CI once read it in between)
        wait_until(lambda: set(status(run).get("services", {})) == {"embed@3", "embed-b@2", "gateway"}, 10)
        assert status(run)["generation"] == 3
        load.more()
        # Remove B: its name is gone, A serves on.
        reload_via_sighup(run, models_file, A_MAIN, 2)
        assert "Reload complete: configuration 4 serves (removed embed-b (BAAI/bge-m3))." in run.output()
        assert embed(port, "b") == 404
        load.more()
    assert load.failed == []
    assert "Traceback" not in run.output()


def test_a_reload_whose_new_tei_fails_leaves_the_model_serving(served: tuple[LauncherRun, Path]) -> None:
    run, models_file = served
    with load_on_a(run) as load:
        load.more()
        models_file.write_text(A_BROKEN)
        result = manage(run, "--reload", "--timeout", "60")
        assert result.returncode == 1, result.stdout + result.stderr
        assert "Reload failed: the new embeddings server failed to start" in result.stderr
        assert "still serving the previous configuration" in result.stderr
        assert "Reload failed: the new embeddings server failed to start" in run.output()
        load.more()
        wait_until(lambda: set(status(run).get("services", {})) == {"embed", "gateway"})
    assert load.failed == []
    # The launcher still reloads afterwards, and --reload says so.
    models_file.write_text(A + B)
    result = manage(run, "--reload", "--timeout", "60")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Reload complete: configuration 3 serves (added embed-b (BAAI/bge-m3))." in result.stdout


def test_vector_change_and_port_change_are_refused(served: tuple[LauncherRun, Path], tmp_path: Path) -> None:
    run, models_file = served
    models_file.write_text(A_MAIN_REFUSED)
    result = manage(run, "--reload", "--timeout", "60")
    assert result.returncode == 1
    assert "the model behind 'a' would change from BAAI/bge-small-en-v1.5 to BAAI/bge-small-en-v1.5@main" in \
        result.stderr
    models_file.write_text(A)
    env_file = Path(run.env["EMBED_ENV_FILE"])
    env_file.write_text("EMBED_PORT=1\n")
    result = manage(run, "--reload", "--timeout", "60")
    assert result.returncode == 1
    assert "Reload failed: EMBED_PORT changed: restart required" in result.stderr
    assert "Reload failed: EMBED_PORT changed: restart required (a reload cannot change it); still serving the" \
        " previous configuration" in run.output()
    assert embed(run.ports["EMBED_PORT"], "a") == 200
    # A models file with an error: one line naming the file and the key, nothing changes.
    env_file.write_text("")
    models_file.write_text(A + "max_batch_tokens = -1\n")
    result = manage(run, "--reload", "--timeout", "60")
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("Reload failed: invalid configuration (1 problem): - EMBED_MODELS_FILE ")
    assert "models[1].max_batch_tokens" in line and line.endswith("; still serving the previous configuration")
    assert embed(run.ports["EMBED_PORT"], "a") == 200


def test_gateway_settings_reload_without_a_new_process(served: tuple[LauncherRun, Path]) -> None:
    """EMBED_GATEWAY_MAX_INPUTS (a gateway setting) applies on reload: same gateway and TEI pids."""
    run, _ = served
    port = run.ports["EMBED_PORT"]
    before = {name: s["pid"] for name, s in status(run)["services"].items()}
    Path(run.env["EMBED_ENV_FILE"]).write_text("EMBED_GATEWAY_MAX_INPUTS=2\n")
    result = manage(run, "--reload", "--timeout", "60")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no model changed; the gateway's settings are applied" in result.stdout
    body = json.dumps({"model": "a", "input": ["one", "two", "three"]}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/embeddings", data=body, method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert b"EMBED_GATEWAY_MAX_INPUTS" in refused.value.read()
    assert embed(port, "a") == 200
    assert {name: s["pid"] for name, s in status(run)["services"].items()} == before


def test_every_gateway_worker_switches_before_the_old_routes_go(launch: Launch, tmp_path: Path) -> None:
    """Two gateway workers: the reload completes once both applied the routes; both serve the new model."""
    models_file = tmp_path / "models.toml"
    models_file.write_text(A)
    run = launch({"EMBED_MODELS_FILE": str(models_file), "EMBED_API_KEY": KEY, "EMBED_GATEWAY_WORKERS": "2"})
    run.wait_for("server is ready", timeout_s=60)
    with load_on_a(run) as load:
        load.more()
        models_file.write_text(A_MAIN + B)
        result = manage(run, "--reload", "--timeout", "60")
        assert result.returncode == 0, result.stdout + result.stderr
        assert run.output().count("Gateway routes: configuration 2 in force") == 2
        assert all(embed(run.ports["EMBED_PORT"], "b") == 200 for _ in range(20))  # whichever worker answers
        load.more()
    assert load.failed == []


def test_with_the_gateway_off_a_reload_closes_metrics_without_a_new_process(launch: Launch) -> None:
    """EMBED_GATEWAY=false: the gateway serves only /metrics on the Prometheus port; EMBED_METRICS_AUTH set by a
    reload applies there with the same pids, and a model change is still refused (TEI holds the public port)."""
    run = launch({"EMBED_GATEWAY": "false", "EMBED_API_KEY": KEY})
    run.wait_for("server is ready", timeout_s=60)
    url = f"http://127.0.0.1:{run.ports['EMBED_PROMETHEUS_PORT']}/metrics"
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert b"embed_up" in answer.read()
    wait_until(lambda: status(run).get("services", {}).get("gateway", {}).get("state") == "running")
    before = {name: s["pid"] for name, s in status(run)["services"].items()}
    Path(run.env["EMBED_ENV_FILE"]).write_text("EMBED_METRICS_AUTH=true\n")
    result = manage(run, "--reload", "--timeout", "60")
    assert result.returncode == 0, result.stdout + result.stderr
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=10)
    assert refused.value.code == 401
    keyed = urllib.request.Request(url, headers={"Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(keyed, timeout=10) as answer:
        assert b"embed_up" in answer.read()
    assert {name: s["pid"] for name, s in status(run)["services"].items()} == before
    Path(run.env["EMBED_ENV_FILE"]).write_text("EMBED_METRICS_AUTH=true\nEMBED_MODEL=BAAI/bge-m3\n")
    refused_model = manage(run, "--reload", "--timeout", "60")
    assert refused_model.returncode == 1 and "EMBED_GATEWAY is off" in refused_model.stdout + refused_model.stderr
