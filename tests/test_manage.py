"""embed_manage through click's CliRunner: every flag, its messages and its exit code (original §1.9)."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import Result
from conftest import free_port
from fake_hub.repos import GRANTED_TOKEN
from fake_hub.server import HubStandIn

from embed_launcher.manage.models import LOCAL_ONLY_BLOCKED
from embed_launcher.models.cache import cached_size, repo_dir
from embed_launcher.models.progress import human_bytes

Manage = Callable[..., Result]
KEY = "embed-" + "ab" * 24
MISSING_MODEL = "Error: Missing model ID. Usage: --pullmodel <model>"
HINT = "To activate this model"


def write_state(data: Path, **files: object) -> None:
    """State files as the launcher writes them: ``port=8000`` → ``.port``, no trailing newline."""
    for name, value in files.items():
        (data / f".{name}").write_text(str(value))


@pytest.fixture
def healthy() -> Iterator[Callable[..., int]]:
    """Start tiny HTTP servers on 127.0.0.1:0 that answer GET /health with 200; returns their port."""
    servers: list[ThreadingHTTPServer] = []

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/health" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    def start(host: str = "127.0.0.1") -> int:
        server = ThreadingHTTPServer((host, 0), Health)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return int(server.server_address[1])

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def hub() -> Iterator[HubStandIn]:
    """A fresh Hub stand-in per test, so its access log counts this test's bytes only."""
    with HubStandIn() as server:
        yield server


# ---- usage ---------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_prints_usage_and_exits_0(manage: Manage, flag: str) -> None:
    """-h/--help: the usage text, every action listed, exit 0."""
    result = manage(flag)
    assert result.exit_code == 0
    assert result.output.startswith("Usage: embed_manage")
    for action in ("--showinfo", "--showkey", "--getkey", "--status", "--listmodels", "--listrerankers",
                   "--pullmodel <model>"):
        assert action in result.output


def test_no_action_prints_usage_and_exits_1(manage: Manage) -> None:
    """No action: usage on stderr, exit 1 (the original's code)."""
    result = manage()
    assert result.exit_code == 1
    assert result.stderr.startswith("Usage: embed_manage") and result.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--getkey", "--showkey"], "Error: Specify only one action at a time."),
        (["--listmodels", "--pullmodel", "BAAI/bge-m3"], "Error: Specify only one action at a time."),
        (["--foo"], "Error: Unknown parameter: --foo"),
        (["--pullmodel"], MISSING_MODEL),
        (["--pullmodel", ""], MISSING_MODEL),
        (["--pullmodel", "--getkey"], MISSING_MODEL),
        (["--showkey", "--json"], "Error: --json goes with --status."),
    ],
)
def test_usage_mistakes_print_one_error_line_and_exit_2(manage: Manage, args: list[str], message: str) -> None:
    """A usage mistake is one ``Error:`` line on stderr and exit 2, never click's usage dump."""
    result = manage(*args)
    assert result.exit_code == 2
    assert result.stderr == message + "\n" and result.stdout == ""


# ---- keys ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "env", "printed"),
    [
        ({"api_key": KEY}, {}, KEY),
        ({"api_key": KEY, "embed_auth_enabled": 1}, {"EMBED_API_KEY": "from-exec-env"}, "from-exec-env"),
        ({"api_key": KEY, "embed_auth_enabled": 0, "rerank_auth_enabled": 1, "rerank_api_key": "rk"}, {}, "rk"),
    ],
)
def test_getkey_prints_the_raw_key_without_newline(
    manage: Manage, data: Path, files: dict[str, object], env: dict[str, str], printed: str
) -> None:
    """--getkey: exactly the key, no newline, exit 0 (exec env first, else the key files)."""
    write_state(data, **files)
    result = manage("--getkey", env=env)
    assert (result.exit_code, result.stdout, result.stderr) == (0, printed, "")


def _getkey_on(stdout_is_a_terminal: bool, data: Path, tmp_path: Path) -> bytes:
    """Everything a real `embed_manage --getkey` process writes to its stdout, a pty or a pipe."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMBED_", "RERANK_", "HF_"))}
    env |= {"EMBED_DATA_DIR": str(data), "EMBED_ENV_FILE": str(tmp_path / "embed.env")}
    command = [sys.executable, "-m", "embed_launcher.manage", "--getkey"]
    if not stdout_is_a_terminal:
        return subprocess.run(command, env=env, capture_output=True, timeout=60, check=True).stdout
    parent, child = pty.openpty()
    try:
        proc = subprocess.Popen(command, env=env, stdout=child, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        os.close(child)
        out = b""
        while chunk := _read_pty(parent):
            out += chunk
        assert proc.wait(timeout=60) == 0
        return out
    finally:
        os.close(parent)


def _read_pty(fd: int) -> bytes:
    try:
        return os.read(fd, 4096)
    except OSError:  # EIO: the child closed its end
        return b""


def test_getkey_ends_its_line_on_a_terminal_and_stays_bare_in_a_pipe(data: Path, tmp_path: Path) -> None:
    """On a terminal the prompt does not run into the key; `KEY=$(embed_manage --getkey)` gets it bare."""
    write_state(data, api_key=KEY)
    assert _getkey_on(True, data, tmp_path) in (KEY.encode() + b"\r\n", KEY.encode() + b"\n")
    assert _getkey_on(False, data, tmp_path) == KEY.encode()


@pytest.mark.parametrize(
    "files",
    [{}, {"api_key": KEY, "embed_auth_enabled": 0, "rerank_auth_enabled": 0}],
    ids=["no-key", "auth-off"],
)
def test_getkey_without_a_key_prints_nothing_and_exits_1(manage: Manage, data: Path, files: dict[str, object]) -> None:
    """--getkey with no key, or with auth off for both services: no output at all, exit 1."""
    write_state(data, **files)
    result = manage("--getkey")
    assert (result.exit_code, result.output) == (1, "")


def test_showkey_shows_one_box_when_keys_agree(manage: Manage, data: Path) -> None:
    """--showkey: the original's box titled ' EmbedCrate API key', then the header to use."""
    write_state(data, api_key=KEY, embed_auth_enabled=1, rerank_auth_enabled=1)
    result = manage("--showkey")
    assert result.exit_code == 0
    rule = "=" * 59
    assert f"{rule}\n EmbedCrate API key\n{rule}\n{KEY}\n{rule}\n" in result.stdout
    assert f'Use with: -H "Authorization: Bearer {KEY}"' in result.stdout
    assert result.stdout.count(rule) == 3


def test_showkey_shows_both_keys_when_they_differ(manage: Manage, data: Path) -> None:
    """--showkey with a reranker key of its own: one box per service."""
    write_state(data, api_key=KEY, rerank_api_key="rerank-key", embed_auth_enabled=1, rerank_auth_enabled=1)
    result = manage("--showkey")
    assert result.exit_code == 0
    assert " Embeddings API key" in result.stdout and " Reranker API key" in result.stdout
    assert 'Bearer rerank-key"' in result.stdout and f'Bearer {KEY}"' in result.stdout


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"api_key": KEY, "embed_auth_enabled": 0, "rerank_auth_enabled": 0},
         "Error: API key authentication is disabled for this container."),
        ({}, "Error: API key not found. Authentication may be disabled for this container."),
    ],
    ids=["auth-off", "no-key"],
)
def test_showkey_errors(manage: Manage, data: Path, files: dict[str, object], message: str) -> None:
    """--showkey without a key to show: the original's message, exit 1."""
    write_state(data, **files)
    result = manage("--showkey")
    assert (result.exit_code, result.stderr, result.stdout) == (1, message + "\n", "")


# ---- showinfo ------------------------------------------------------------------------------


def test_showinfo_prints_the_box_when_health_answers(manage: Manage, data: Path, healthy: Callable[[], int]) -> None:
    """--showinfo: title, model, endpoint, auth header in the example, and the --showkey hint."""
    port = healthy()
    write_state(data, port=port, model="BAAI/bge-m3", server_addr="203.0.113.7", embed_active=1,
                rerank_active=0, embed_auth_enabled=1)
    result = manage("--showinfo")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert " EmbedCrate: Text Embeddings Server\n" in out
    assert "   Model:    BAAI/bge-m3" in out and f"   Endpoint: http://203.0.113.7:{port}" in out
    assert f"  POST http://203.0.113.7:{port}/v1/embeddings" in out
    assert '    -H "Authorization: Bearer <api-key>" \\' in out
    assert "Use '--showkey' to display the API key." in out and "To change the active model:" in out


def test_showinfo_with_both_services(manage: Manage, data: Path, healthy: Callable[[], int]) -> None:
    """Both services answering: the combined title and the /rerank endpoint; no key hint without auth."""
    embed_port, rerank_port = healthy(), healthy()
    write_state(data, port=embed_port, rerank_port=rerank_port, embed_active=1, rerank_active=1,
                embed_auth_enabled=0, rerank_auth_enabled=0, server_addr="127.0.0.1")
    result = manage("--showinfo")
    assert result.exit_code == 0, result.output
    assert " EmbedCrate: Text Embeddings & Reranking Server\n" in result.stdout
    assert f"  POST http://127.0.0.1:{rerank_port}/rerank" in result.stdout
    assert "Bearer" not in result.stdout and "--showkey" not in result.stdout


@pytest.mark.parametrize("down", ["Embeddings", "Reranker"])
def test_showinfo_fails_when_a_service_does_not_answer(
    manage: Manage, data: Path, healthy: Callable[[], int], down: str
) -> None:
    """A service whose /health does not answer: the original's message naming its port, exit 1."""
    dead = free_port()
    ports = {"Embeddings": (dead, healthy()), "Reranker": (healthy(), dead)}[down]
    write_state(data, port=ports[0], rerank_port=ports[1], embed_active=1, rerank_active=1)
    result = manage("--showinfo")
    assert result.exit_code == 1
    assert result.stderr == f"Error: {down} server is not responding on port {dead}. Is the container fully started?\n"


# ---- status --------------------------------------------------------------------------------


def write_status(data: Path, launcher_pid: int | None, age_s: float = 1.0, **services: dict[str, object]) -> None:
    """A live status as the launcher publishes it, written ``age_s`` seconds ago (heartbeat 5 s)."""
    status = {"launcher_pid": launcher_pid, "updated": time.time() - age_s, "heartbeat_s": 5.0, "services": services}
    (data / ".status.json").write_text(json.dumps(status))


def test_status_json_all_healthy_exits_0(manage: Manage, data: Path) -> None:
    """--status --json: model, port, pid, state, health, uptime and restarts per service; ready or busy → 0."""
    write_state(data, port=8000, model="BAAI/bge-m3", rerank_port=8001, embed_active=1,
                rerank_active=1, rerank_model="BAAI/bge-reranker-v2-m3")
    since = time.time() - 125
    write_status(data, os.getpid(),
                 embed={"pid": 4242, "state": "running", "health": "ready", "since": since, "restarts": 2},
                 rerank={"pid": 4343, "state": "running", "health": "busy", "queue_size": 12, "idle_s": 3.5,
                         "since": since, "restarts": 0})
    result = manage("--status", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["healthy"] is True and report["launcher_pid"] == os.getpid() and report["status_age_s"] >= 1
    embed, rerank = report["services"]
    assert (embed["name"], embed["model"], embed["port"], embed["pid"], embed["state"], embed["restarts"]) == (
        "embed", "BAAI/bge-m3", 8000, 4242, "running", 2)
    assert 125 <= embed["uptime_s"] < 185 and embed["healthy"] is True and embed["health"] == "ready"
    assert (rerank["name"], rerank["port"], rerank["healthy"], rerank["health"]) == ("rerank", 8001, True, "busy")
    assert (rerank["queue_size"], rerank["idle_s"]) == (12, 3.5)


@pytest.mark.parametrize(
    "rerank",
    [
        {"pid": 2, "state": "backoff", "restarts": 3},
        {"pid": 2, "state": "running", "health": "unhealthy", "restarts": 3},
        {"pid": 2, "state": "starting", "restarts": 3},
    ],
)
def test_status_json_a_service_not_serving_exits_1(manage: Manage, data: Path, rerank: dict[str, object]) -> None:
    """One enabled service restarting, unhealthy or still starting: it is unhealthy, overall unhealthy, exit 1."""
    write_state(data, port=8000, rerank_port=8001, embed_active=1, rerank_active=1)
    write_status(data, os.getpid(), embed={"pid": 1, "state": "running", "health": "ready", "since": time.time()},
                 rerank=rerank)
    result = manage("--status", "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["healthy"] is False
    assert [(s["name"], s["healthy"], s["state"], s["restarts"]) for s in report["services"]] == [
        ("embed", True, "running", 0), ("rerank", False, rerank["state"], 3)]


def test_a_stale_status_is_not_believed(manage: Manage, data: Path) -> None:
    """A launcher that lives but has not rewritten its status for six heartbeats is stuck: nothing is healthy."""
    write_state(data, port=8000, embed_active=1, rerank_active=0)
    write_status(data, os.getpid(), age_s=31.0, embed={"pid": 1, "state": "running", "health": "ready"})
    result = manage("--status")
    assert result.exit_code == 1
    assert result.stdout.startswith(f"Launcher: STUCK (pid {os.getpid()}; status not updated for 31 s)")
    assert "UNHEALTHY" in result.stdout
    write_status(data, os.getpid(), age_s=29.0, embed={"pid": 1, "state": "running", "health": "ready"})
    assert manage("--status").exit_code == 0


def test_status_table_shows_each_service(manage: Manage, data: Path) -> None:
    """--status (text): the launcher line, then one row per service with uptime and health."""
    write_state(data, port=8000, model="BAAI/bge-small-en-v1.5", rerank_port=8001, embed_active=1, rerank_active=1)
    write_status(data, os.getpid(),
                 embed={"pid": 4242, "state": "running", "health": "ready", "since": time.time() - 125, "restarts": 1},
                 rerank={"pid": 4343, "state": "running", "health": "busy", "queue_size": 7, "idle_s": 12.2,
                         "since": time.time() - 125, "restarts": 0})
    result = manage("--status")
    assert result.exit_code == 0, result.output
    first, header, embed, rerank = result.stdout.splitlines()
    assert first == f"Launcher: running (pid {os.getpid()})" and header.startswith("SERVICE")
    cells = embed.split()
    assert cells[:5] + cells[6:] == ["embed", "BAAI/bge-small-en-v1.5", "8000", "4242", "running", "1", "ready"]
    assert cells[5] in {"2m05s", "2m06s"}
    assert rerank.endswith("busy (queue 7, 12 s since work completed)")


def test_alive_needs_a_launcher_whose_status_is_fresh(manage: Manage, data: Path) -> None:
    """--alive: 0 while the launcher lives and its status is fresh, whatever its children do; else 1, one line."""
    write_state(data, port=8000, embed_active=1, rerank_active=0)
    assert manage("--alive").exit_code == 1
    write_status(data, os.getpid(), embed={"pid": None, "state": "backoff", "restarts": 4})
    result = manage("--alive")
    assert result.exit_code == 0 and result.stdout.startswith(f"alive: launcher pid {os.getpid()}")
    write_status(data, os.getpid(), age_s=120.0, embed={"pid": 1, "state": "running", "health": "busy"})
    result = manage("--alive")
    assert result.exit_code == 1
    assert result.stderr == (f"Error: the launcher (pid {os.getpid()}) last updated its status 120 s ago"
                             " (limit 30 s): its loop is stuck.\n")
    write_status(data, 2**22 + 12345, embed={"pid": 1, "state": "running", "health": "ready"})
    result = manage("--alive")
    assert result.exit_code == 1 and "the launcher is not running" in result.stderr


def test_status_without_a_running_launcher_exits_1(manage: Manage, data: Path) -> None:
    """No launcher (no status file) and nothing listening: 'not running', UNHEALTHY, exit 1."""
    write_state(data, port=free_port(), embed_active=1, rerank_active=0)
    result = manage("--status")
    assert result.exit_code == 1
    assert result.stdout.startswith("Launcher: not running") and "stopped" in result.stdout
    assert "UNHEALTHY" in result.stdout


# ---- listmodels / listrerankers ------------------------------------------------------------


def rows(output: str) -> dict[str, str]:
    """Table rows by model id."""
    return {line[4:].split()[0]: line for line in output.splitlines() if line.startswith(("  * ", "    ")) and "/" in
            line[4:].split()[0]}


def test_listmodels_marks_cached_and_active_models(manage: Manage, data: Path, hub: HubStandIn) -> None:
    """--listmodels: '*' and the size on disk for a complete file set, '(active)' from .model, partial shown."""
    assert manage("--pullmodel", "BAAI/bge-m3", env={"HF_ENDPOINT": hub.endpoint}).exit_code == 0
    (repo_dir(data, "BAAI/bge-base-en-v1.5") / "blobs").mkdir(parents=True)
    (repo_dir(data, "BAAI/bge-base-en-v1.5") / "blobs" / "x.incomplete").write_bytes(b"0" * 5000)
    write_state(data, model="BAAI/bge-m3", embed_active=1)
    result = manage("--listmodels")
    assert result.exit_code == 0, result.output
    table = rows(result.stdout)
    assert list(table)[:6] == ["BAAI/bge-small-en-v1.5", "BAAI/bge-base-en-v1.5", "BAAI/bge-large-en-v1.5",
                               "BAAI/bge-m3", "nomic-ai/nomic-embed-text-v1.5",
                               "sentence-transformers/all-MiniLM-L6-v2"]
    size = human_bytes(cached_size(data, "BAAI/bge-m3"))
    assert table["BAAI/bge-m3"].startswith("  * ") and f"{size} (active)" in table["BAAI/bge-m3"]
    assert "partial, 5 kB" in table["BAAI/bge-base-en-v1.5"] and not table["BAAI/bge-base-en-v1.5"].startswith("  *")
    assert [m for m, line in table.items() if line.startswith("  * ")] == ["BAAI/bge-m3"]
    assert "133 MB" in table["BAAI/bge-small-en-v1.5"] and "default" in table["BAAI/bge-small-en-v1.5"]
    assert "—" in table["BAAI/bge-base-en-v1.5"]  # no file list kept here: no size, rather than a guess


def test_listrerankers_marks_cached_reranker_and_unlisted_active(manage: Manage, data: Path, hub: HubStandIn) -> None:
    """--listrerankers: the reranker catalog; an active model outside the catalog gets a row of its own."""
    assert manage("--pullmodel", "BAAI/bge-reranker-v2-m3", env={"HF_ENDPOINT": hub.endpoint}).exit_code == 0
    write_state(data, rerank_model="example/my-reranker", rerank_active=1)
    result = manage("--listrerankers")
    assert result.exit_code == 0, result.output
    table = rows(result.stdout)
    assert list(table) == ["BAAI/bge-reranker-v2-m3", "BAAI/bge-reranker-base", "BAAI/bge-reranker-large",
                           "cross-encoder/ms-marco-MiniLM-L6-v2", "example/my-reranker"]
    assert table["BAAI/bge-reranker-v2-m3"].startswith("  * ")
    assert human_bytes(cached_size(data, "BAAI/bge-reranker-v2-m3")) in table["BAAI/bge-reranker-v2-m3"]
    assert "(active)" in table["example/my-reranker"] and "(active)" not in table["BAAI/bge-reranker-v2-m3"]


def test_listmodels_reports_a_bad_env_file_with_exit_2(manage: Manage) -> None:
    """A configuration problem in the env file goes through the funnel: one message, exit 2."""
    result = manage("--listmodels", env_file="EMBED_BACKEND=tpu\n")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: invalid configuration") and "EMBED_BACKEND" in result.stderr


# ---- pullmodel -----------------------------------------------------------------------------


def test_pullmodel_fetches_only_tei_files_with_progress(manage: Manage, data: Path, hub: HubStandIn) -> None:
    """--pullmodel on a fresh data dir: bytes served == TEI's file set, progress shown, activation hint."""
    result = manage("--pullmodel", "BAAI/bge-m3", env={"HF_ENDPOINT": hub.endpoint})
    assert result.exit_code == 0, result.output
    want = hub.repos["BAAI/bge-m3"].tei_files("onnx")
    assert hub.downloaded("BAAI/bge-m3") == want
    out = result.stdout
    for line in (f"Downloading model 'BAAI/bge-m3' to {data}...",
                 "This may take several minutes depending on model size and network speed.",
                 "Downloading BAAI/bge-m3: 100%", "  Model 'BAAI/bge-m3' downloaded successfully.",
                 f"  Cache location: {data}", f"  Downloaded: {human_bytes(sum(want.values()))}; TEI's file set: ",
                 "To activate this model, set EMBED_MODEL=BAAI/bge-m3 (or RERANK_MODEL=BAAI/bge-m3)",
                 "in your env file (embed.env) and restart the container."):
        assert line in out
    assert result.stderr == ""


def test_pullmodel_again_downloads_nothing(manage: Manage, hub: HubStandIn) -> None:
    """A second pull of a complete model asks the Hub once and fetches no file (the original CI's step)."""
    manage("--pullmodel", "BAAI/bge-small-en-v1.5", env={"HF_ENDPOINT": hub.endpoint})
    hub.clear_log()
    result = manage("--pullmodel", "BAAI/bge-small-en-v1.5", env={"HF_ENDPOINT": hub.endpoint})
    assert result.exit_code == 0 and "downloaded successfully" in result.stdout
    assert "  Downloaded: 0 B;" in result.stdout and hub.downloaded("BAAI/bge-small-en-v1.5") == {}


@pytest.mark.parametrize(
    ("model", "env_file", "message"),
    [
        ("example/nope", "", "Error: model 'example/nope' was not found on the Hub"),
        ("example/no-weights", "", "Error: TEI cannot serve model 'example/no-weights'"),
        ("example/gated-embedder", "", "Error: model 'example/gated-embedder' is gated"),
        ("BAAI/bge-m3", "EMBED_MODEL=BAAI/bge-m3\nEMBED_REVISION=v9\n", "Error: revision 'v9' of model"),
    ],
    ids=["unknown", "no-weights", "gated", "configured-revision"],
)
def test_pullmodel_failure_exits_1_without_hint(
    manage: Manage, hub: HubStandIn, model: str, env_file: str, message: str
) -> None:
    """A failed pull: one error line on stderr, exit 1, and never the activation hint."""
    result = manage("--pullmodel", model, env={"HF_ENDPOINT": hub.endpoint}, env_file=env_file)
    assert result.exit_code == 1
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1
    assert HINT not in result.output and "successfully" not in result.output


def test_pullmodel_reads_the_token_from_the_env_file(manage: Manage, hub: HubStandIn) -> None:
    """EMBED_HF_TOKEN from the env file (which docker exec never sees) opens a gated repo."""
    result = manage("--pullmodel", "example/gated-embedder", env={"HF_ENDPOINT": hub.endpoint},
                    env_file=f"EMBED_HF_TOKEN={GRANTED_TOKEN}\n")
    assert result.exit_code == 0, result.output
    assert hub.downloaded("example/gated-embedder")


def test_pullmodel_of_another_model_uses_main(manage: Manage, hub: HubStandIn) -> None:
    """EMBED_REVISION belongs to EMBED_MODEL only: pulling any other model uses main."""
    result = manage("--pullmodel", "BAAI/bge-m3", env={"HF_ENDPOINT": hub.endpoint},
                    env_file="EMBED_MODEL=BAAI/bge-small-en-v1.5\nEMBED_REVISION=v9\n")
    assert result.exit_code == 0, result.output


def test_pullmodel_rejects_a_malformed_model_id(manage: Manage, hub: HubStandIn) -> None:
    """A model id that is not org/name: a usage error (exit 2) before any network."""
    result = manage("--pullmodel", "../../etc", env={"HF_ENDPOINT": hub.endpoint})
    assert result.exit_code == 2 and "is not a model ID" in result.stderr and hub.log == []


@pytest.mark.parametrize("where", ["env", "env_file"])
def test_pullmodel_blocked_in_local_only_mode(manage: Manage, hub: HubStandIn, where: str) -> None:
    """EMBED_LOCAL_ONLY (exec env or env file) with the model not cached: the original's message, exit 1."""
    env = {"HF_ENDPOINT": hub.endpoint} | ({"EMBED_LOCAL_ONLY": "true"} if where == "env" else {})
    result = manage("--pullmodel", "BAAI/bge-m3", env=env,
                    env_file="EMBED_LOCAL_ONLY=true\n" if where == "env_file" else "")
    assert (result.exit_code, result.stderr) == (1, LOCAL_ONLY_BLOCKED + "\n")
    assert HINT not in result.output and hub.log == []


def test_pullmodel_local_only_with_complete_cache_succeeds(manage: Manage, hub: HubStandIn, data: Path) -> None:
    """Local-only and the model already complete in the cache: say so, no network, exit 0."""
    assert manage("--pullmodel", "BAAI/bge-m3", env={"HF_ENDPOINT": hub.endpoint}).exit_code == 0
    hub.clear_log()
    result = manage("--pullmodel", "BAAI/bge-m3", env={"HF_ENDPOINT": hub.endpoint}, env_file="EMBED_LOCAL_ONLY=1\n")
    assert result.exit_code == 0, result.output
    assert f"Model 'BAAI/bge-m3' is already complete in {data}" in result.stdout and HINT in result.stdout
    assert hub.log == []


def test_pullmodel_hub_down_with_complete_cache_succeeds(manage: Manage, hub: HubStandIn) -> None:
    """Hub unreachable but the file set complete: exit 0, saying updates could not be checked."""
    endpoint = hub.endpoint
    assert manage("--pullmodel", "BAAI/bge-m3", env={"HF_ENDPOINT": endpoint}).exit_code == 0
    hub.stop()
    result = manage("--pullmodel", "BAAI/bge-m3", env={"HF_ENDPOINT": endpoint})
    assert result.exit_code == 0, result.output
    assert "without checking for updates" in result.stderr
    assert "updates could not be checked" in result.stdout and HINT in result.stdout


def test_pullmodel_hub_down_without_cache_fails(manage: Manage, hub: HubStandIn) -> None:
    """Hub unreachable and nothing cached: one error naming the Hub, exit 1, no hint."""
    endpoint = hub.endpoint
    hub.stop()
    result = manage("--pullmodel", "BAAI/bge-m3", env={"HF_ENDPOINT": endpoint})
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: cannot reach the Hub at {endpoint}") and HINT not in result.output


def test_status_shows_every_replica_and_a_model_serves_while_one_replica_restarts(manage: Manage, data: Path) -> None:
    """Replicas: one row each (replica, GPU); a model with one replica ready still serves (exit 0, the container
    stays healthy: the gateway routes around the other); with none ready it does not (exit 1)."""
    write_state(data, port=8000, model="BAAI/bge-m3", embed_active=1, rerank_active=0)

    def replica(i: int, state: str, **more: object) -> dict[str, object]:
        return {"kind": "embed", "model": "BAAI/bge-m3", "port": 30000 + i, "pid": 100 + i, "state": state,
                "service": "embed", "replica": i, "replicas": 2, "gpu": str(i), "since": time.time(), **more}

    def publish(**services: dict[str, object]) -> None:  # "embed#0" is no keyword: the file is written here
        status = {"launcher_pid": os.getpid(), "updated": time.time(), "heartbeat_s": 5.0,
                  "services": {name.replace("_", "#"): record for name, record in services.items()}}
        (data / ".status.json").write_text(json.dumps(status))

    publish(embed_0=replica(0, "running", health="ready"), embed_1=replica(1, "backoff", restarts=2))
    result = manage("--status", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["services"]
    assert [(r["name"], r["service"], r["replica"], r["gpu"], r["state"], r["healthy"]) for r in rows] == [
        ("embed#0", "embed", 0, "0", "running", True), ("embed#1", "embed", 1, "1", "backoff", False)]
    table = manage("--status").stdout.splitlines()
    assert table[1].split()[:5] == ["SERVICE", "MODEL", "REPLICA", "GPU", "INPUTS"]
    assert table[3].split()[:4] == ["embed#1", "BAAI/bge-m3", "1", "1"]
    publish(embed_0=replica(0, "starting"), embed_1=replica(1, "fatal", gave_up=True))
    result = manage("--status", "--json")
    assert result.exit_code == 1
    assert [r["state"] for r in json.loads(result.stdout)["services"]] == ["starting", "gave up"]
