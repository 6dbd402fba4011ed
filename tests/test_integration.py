"""The launcher end to end: real processes, the TEI stand-in, real sockets on 127.0.0.1, real signals.

These are the original project's CI matrix on bare metal (no env, env file, explicit key, with
reranker, explicitly empty key, existing data without a key, restart keeping the key) plus the
supervision promises: a killed child heals while its sibling serves, SIGTERM leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from conftest import LauncherRun, alive, make_tei, manage, wait_until
from fake_hub.repos import GRANTED_TOKEN
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

pytestmark = pytest.mark.integration

Launch = Callable[..., LauncherRun]


def post(port: int, path: str, body: object, key: str | None = None) -> tuple[int, object]:
    """POST JSON to the server; returns (status, parsed body or None)."""
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, (json.loads(raw) if raw.startswith(b"{") else raw.decode())


def embed(run: LauncherRun, key: str | None, texts: object = "hello") -> int:
    return post(run.ports["EMBED_PORT"], "/v1/embeddings", {"input": texts}, key)[0]


def getkey(run: LauncherRun) -> str:
    result = manage(run, "--getkey")
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_no_env_serves_embeddings_with_a_generated_key(launch: Launch) -> None:
    """no-env: a fresh data dir gets an embed- key that embed_manage --getkey prints; requests need it."""
    run = launch()
    run.wait_for("Text embeddings server is ready")
    key = getkey(run)
    assert key.startswith("embed-") and len(key) == 6 + 48
    assert (run.data_dir / ".auto_api_key_created").read_text() == "true"
    assert embed(run, None) == 401
    status, body = post(run.ports["EMBED_PORT"], "/v1/embeddings", {"input": ["a", "b"]}, key)
    assert status == 200 and len(body["data"]) == 2  # type: ignore[index]


def test_env_file_values_override_the_environment(launch: Launch, tmp_path: Path) -> None:
    """with-env: the env file's key wins over the process environment's."""
    run = launch({"EMBED_API_KEY": "from-environment"}, env_file_text="EMBED_API_KEY='from-file'\n")
    run.wait_for("Text embeddings server is ready")
    assert embed(run, "from-file") == 200
    assert embed(run, "from-environment") == 401
    assert getkey(run) == "from-file"


def test_explicit_key_is_used_and_persisted(launch: Launch) -> None:
    """with-key: a given key is required by TEI and saved 0600 in .api_key."""
    run = launch({"EMBED_API_KEY": "my-secret-key-123"})
    run.wait_for("Text embeddings server is ready")
    assert embed(run, "my-secret-key-123") == 200
    key_file = run.data_dir / ".api_key"
    assert key_file.read_text() == "my-secret-key-123"
    assert key_file.stat().st_mode & 0o777 == 0o600


def test_with_reranker_both_services_answer(launch: Launch) -> None:
    """with-rerank: /rerank on its own port, 100+ candidates accepted, the combined banner printed."""
    run = launch({"RERANK_ENABLED": "true"})
    run.wait_for("Text embeddings & reranking server is ready")
    key = getkey(run)
    texts = [f"document {i}" for i in range(150)]
    status, body = post(run.ports["RERANK_PORT"], "/rerank", {"query": "q", "texts": texts}, key)
    assert status == 200 and len(body) == 150  # type: ignore[arg-type]
    assert embed(run, key, [f"text {i}" for i in range(300)]) == 200


def test_explicitly_empty_key_disables_auth(launch: Launch) -> None:
    """empty-key: EMBED_API_KEY= means no auth, and --getkey prints nothing and fails."""
    run = launch({"EMBED_API_KEY": ""})
    run.wait_for("Text embeddings server is ready")
    assert embed(run, None) == 200
    result = manage(run, "--getkey")
    assert result.returncode == 1 and result.stdout == ""


def test_existing_data_without_a_key_stays_open(launch: Launch, tmp_path: Path) -> None:
    """existing-no-key: earlier state but no key -> no auth and the compatibility warning."""
    data = tmp_path / "data"
    data.mkdir()
    (data / ".server_addr").write_text("1.2.3.4")
    run = launch(data_dir=data)
    run.wait_for("Text embeddings server is ready")
    assert "Preserving no-auth behavior for backward compatibility." in run.output()
    assert embed(run, None) == 200


def test_restart_on_the_same_data_dir_keeps_the_key(launch: Launch) -> None:
    """A second start on the same data dir reuses the generated key."""
    first = launch()
    first.wait_for("Text embeddings server is ready")
    key = getkey(first)
    first.signal(signal.SIGTERM)
    assert first.wait_exit() == 0
    second = launch()
    second.wait_for("Text embeddings server is ready")
    assert getkey(second) == key
    assert embed(second, key) == 200


def test_killed_child_heals_while_its_sibling_keeps_serving(launch: Launch) -> None:
    """kill -9 of the embeddings TEI: restarted within seconds; the reranker answers throughout."""
    run = launch({"RERANK_ENABLED": "true", "EMBED_API_KEY": "k"})
    run.wait_for("Text embeddings & reranking server is ready")
    old = run.child_pid("embed")
    psutil.Process(old).kill()
    run.wait_for("Embeddings server exited unexpectedly (signal SIGKILL (137), possibly out of memory)")
    assert post(run.ports["RERANK_PORT"], "/rerank", {"query": "q", "texts": ["a"]}, "k")[0] == 200
    run.wait_for("Embeddings server is ready again (restart 1).")
    assert run.child_pid("embed") != old
    assert embed(run, "k") == 200


def test_sigterm_stops_everything_within_the_stop_timeout(launch: Launch) -> None:
    """SIGTERM: children get TERM, the launcher exits 0 before the stop timeout, and no process is left."""
    run = launch({"RERANK_ENABLED": "true", "EMBED_STOP_TIMEOUT": "60"})
    run.wait_for("Text embeddings & reranking server is ready")
    children = run.children()
    assert len(children) >= 2
    run.signal(signal.SIGTERM)
    assert run.wait_exit(30) == 0  # well before the 60 s stop timeout
    assert "killing" not in run.output()  # every child stopped by itself (benchmarks/launcher_bench.py times it)
    assert not alive(children)
    assert "Stopping services..." in run.output()


def test_bad_port_exits_2_before_any_child_starts(launch: Launch) -> None:
    """A configuration error is reported by name and nothing is spawned."""
    run = launch({"EMBED_PORT": "70000"})
    assert run.wait_exit() == 2
    assert "EMBED_PORT" in run.output() and "70000" in run.output()
    assert "[embed]" not in run.output()


def test_port_in_use_is_reported_with_its_owner(launch: Launch) -> None:
    """A busy port is named (with the owning pid) and the launcher exits 2 without spawning TEI."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        run = launch({"EMBED_PORT": str(port)})
        assert run.wait_exit() == 2
    out = run.output()
    assert f"port {port} (EMBED_PORT)" in out and "already in use" in out
    assert "[embed]" not in out


def test_no_secret_in_any_argv_or_in_the_output(launch: Launch) -> None:
    """Keys and the HF token are in no child's command line and masked in every relayed line."""
    secrets = {"EMBED_API_KEY": "embed-key-SECRET-1", "RERANK_API_KEY": "rerank-key-SECRET-2",
               "EMBED_HF_TOKEN": GRANTED_TOKEN}  # fmt: skip
    run = launch({"RERANK_ENABLED": "true", **secrets})
    run.wait_for("Text embeddings & reranking server is ready")
    for child in run.children():
        cmdline = " ".join(child.cmdline())
        assert not any(s in cmdline for s in secrets.values()), cmdline
    out = run.output()
    assert "Args {" in out  # TEI's first line, which prints api_key in clear, was relayed...
    assert not any(s in out for s in secrets.values())  # ...masked
    assert 'api_key: Some("***")' in out


def test_tei_missing_is_a_clear_configuration_error(launch: Launch, tmp_path: Path) -> None:
    """No TEI binary: one line that says how to get it; exit 2."""
    run = launch({"EMBED_TEI_BIN": str(tmp_path / "nope")})
    assert run.wait_exit() == 2
    assert "EMBED_TEI_BIN" in run.output() and "Traceback" not in run.output()


def test_crash_loop_gives_up_with_exit_1_and_the_last_error(launch: Launch, tei_dir: Path) -> None:
    """A TEI that always fails to start: retried, then the launcher exits 1 showing TEI's error."""
    tei = make_tei(tei_dir, fail_start=1)
    run = launch({"EMBED_START_RETRIES": "3", "EMBED_RESTART_DELAY": "0.05"}, tei=tei)
    assert run.wait_exit(30) == 1
    out = run.output()
    assert "failed to start 3 times in a row; giving up" in out
    assert "Error:" in out.split("Last output of the embeddings server:")[1]
    assert "Hint: The model failed its warm-up" in out  # TEI's "Model backend is not healthy"


def test_status_reports_healthy_services_as_json(launch: Launch) -> None:
    """embed_manage --status --json: exit 0 and every service healthy while serving."""
    run = launch({"RERANK_ENABLED": "true", "EMBED_GATEWAY": "false"})  # TEI direct, the gateway for /metrics only
    run.wait_for("Text embeddings & reranking server is ready")
    wait_until(
        lambda: json.loads((run.data_dir / ".status.json").read_text())["services"]["rerank"]["state"] == "running"
    )
    result = manage(run, "--status", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["healthy"] and {s["name"] for s in report["services"]} == {"embed", "rerank", "gateway"}
    assert all(s["state"] == "running" and s["pid"] for s in report["services"])


def test_tei_on_path_is_found_without_embed_tei_bin(launch: Launch, tei_dir: Path) -> None:
    """Bare metal: `text-embeddings-router` on PATH is enough."""
    wrapper = make_tei(tei_dir, load_s=0.1)
    wrapper.rename(tei_dir / "text-embeddings-router")
    path = f"{tei_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    run = launch({"EMBED_TEI_BIN": "", "PATH": path})
    run.wait_for("Text embeddings server is ready")  # nothing else named text-embeddings-router exists


def test_the_default_serves_every_dialect_and_what_tei_served_on_both_ports(launch: Launch) -> None:
    """Issue 18: one model of each kind, nothing set: the gateway is on, so Cohere's /v1/rerank (Open WebUI's
    reranker, LiteLLM, the cohere SDK) answers out of the box, and TEI's own routes stay on their ports."""
    run = launch({"RERANK_ENABLED": "true", "EMBED_API_KEY": "k"})
    run.wait_for("Text embeddings & reranking server is ready")
    embed_port, rerank_port = run.ports["EMBED_PORT"], run.ports["RERANK_PORT"]
    cohere = {"query": "q", "documents": ["a", "b"]}
    for port in (embed_port, rerank_port):
        status, answer = post(port, "/v1/rerank", cohere, "k")
        assert status == 200 and len(answer["results"]) == 2, answer  # type: ignore[index]
        assert post(port, "/rerank", {"query": "q", "texts": ["a"]}, "k")[0] == 200
    assert post(embed_port, "/embed", {"inputs": "hello"}, "k")[0] == 200  # RAGFlow's
    assert post(embed_port, "/v1/embeddings", {"input": "hello"}, "k")[0] == 200
    assert post(embed_port, "/api/embed", {"model": "BAAI/bge-small-en-v1.5", "input": "hi"}, "k")[0] == 200
    for port in (embed_port, rerank_port):  # public, as TEI's (and, as TEI's, empty until its first request)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as metrics:
            assert b"te_request_count" in metrics.read()
    info = urllib.request.Request(f"http://127.0.0.1:{embed_port}/info", headers={"Authorization": "Bearer k"})
    with urllib.request.urlopen(info, timeout=10) as answer:  # Dify's
        assert json.loads(answer.read())["model_id"]


def test_with_the_gateway_off_the_prometheus_ports_serve_the_same_metrics(launch: Launch) -> None:
    """Issue 20: EMBED_GATEWAY=false keeps TEI itself on the public ports, and the Prometheus ports answer
    /metrics with the same families as the gateway's: every TEI's relabelled, the launcher's own."""
    def scrape(port: int) -> dict[str, list[Sample]]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            return {f.name: f.samples for f in text_string_to_metric_families(answer.read().decode())}

    run = launch({"RERANK_ENABLED": "true", "EMBED_GATEWAY": "false", "EMBED_API_KEY": "embed-key",
                  "RERANK_API_KEY": "rerank-key"})
    run.wait_for("Text embeddings & reranking server is ready")
    assert post(run.ports["EMBED_PORT"], "/embed", {"inputs": "hello"}, "embed-key")[0] == 200  # TEI itself
    assert post(run.ports["RERANK_PORT"], "/rerank", {"query": "q", "texts": ["a"]}, "rerank-key")[0] == 200
    cohere = {"query": "q", "documents": ["a"]}
    assert post(run.ports["EMBED_PORT"], "/v1/rerank", cohere, "embed-key")[0] == 404  # TEI has no Cohere route
    own = ("embed_requests", "embed_request_duration_seconds", "embed_inputs", "embed_inflight_inputs",
           "embed_gateway_waits", "embed_gateway_retries", "embed_batch_splits", "embed_replica_state",
           "embed_replica_restarts", "embed_up", "embed_build_info", "embed_scrape_errors")

    def counted() -> bool:
        found = scrape(run.ports["EMBED_PROMETHEUS_PORT"])
        return any(s.labels.get("model") == "BAAI/bge-small-en-v1.5" and s.value >= 1
                   for s in found.get("te_request_count", ()))

    wait_until(counted, 10)  # the launcher's first probe marks TEI ready for the scraper
    for port in (run.ports["EMBED_PROMETHEUS_PORT"], run.ports["RERANK_PROMETHEUS_PORT"]):
        found = scrape(port)
        assert all(found.get(name) for name in own), [name for name in own if not found.get(name)]
        up = {s.labels["model"]: s.value for s in found["embed_up"]}
        assert up == {"BAAI/bge-small-en-v1.5": 1.0, "BAAI/bge-reranker-v2-m3": 1.0}
        kinds = {(s.labels["model"], s.labels["kind"], s.labels["replica"])
                 for s in found["te_queue_size"]}
        assert kinds == {("BAAI/bge-small-en-v1.5", "embed", "0"), ("BAAI/bge-reranker-v2-m3", "rerank", "0")}
    with urllib.request.urlopen(f"http://127.0.0.1:{run.ports['EMBED_PORT']}/metrics", timeout=10) as answer:
        own_text = answer.read()
    assert b"te_request_count" in own_text and b"embed_up" not in own_text  # TEI's own on its port, as before
    out = run.output()
    assert "Gateway ready on" in out and "(/metrics only" in out and "Keys file" not in out  # the default keys only


def test_with_the_gateway_off_a_killed_metrics_gateway_heals_and_tei_never_notices(launch: Launch) -> None:
    """kill -9 of the /metrics-only gateway (EMBED_GATEWAY=false): TEI keeps its pid and answers throughout,
    and the Prometheus port answers again once the launcher restarted the gateway."""
    run = launch({"EMBED_GATEWAY": "false", "EMBED_API_KEY": "embed-key"})
    run.wait_for("Text embeddings server is ready")
    wait_until(lambda: json.loads((run.data_dir / ".status.json").read_text())["services"]["gateway"]["state"]
               == "running")
    tei, gateway = run.child_pid("embed"), run.child_pid("gateway")
    psutil.Process(gateway).kill()
    run.wait_for("Gateway server exited unexpectedly")
    assert embed(run, "embed-key") == 200  # TEI itself, on the public port
    run.wait_for("Gateway server is ready again (restart 1).")
    with urllib.request.urlopen(f"http://127.0.0.1:{run.ports['EMBED_PROMETHEUS_PORT']}/metrics", timeout=10) as a:
        assert b"embed_up" in a.read()
    assert run.child_pid("embed") == tei and run.child_pid("gateway") != gateway
