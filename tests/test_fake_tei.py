"""Fidelity tests for the TEI stand-in: it must keep TEI 1.9.3's process and HTTP contract."""

from __future__ import annotations

import base64
import errno
import io
import json
import math
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import FAKE_TEI as FAKE
from conftest import free_port, wait_until, write_model
from fake_tei import args as tei_args
from fake_tei import cli as cli
from fake_tei import model as fm
from fake_tei import server as fake_server

USAGE = "Usage: text-embeddings-router [OPTIONS] --model-id <MODEL_ID>"
TRY_HELP = "\n\nFor more information, try '--help'.\n"
KEY = "sekrit-key"


# helpers ------------------------------------------------------------------------------------------
def base_env(tmp: Path, **extra: str) -> dict[str, str]:
    """A scrubbed environment, as the launcher gives TEI: nothing inherited but PATH."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp), "NO_COLOR": "1",
           "FAKE_TEI_LOAD_S": "0"}
    env.update(extra)
    return env


def run_fake(args: list[str], env: dict[str, str], timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(FAKE), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


class Fake:
    """A running fake TEI with its stdout collected line by line."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, str(FAKE), "--hostname", "127.0.0.1", "--port", str(self.port),
                                      "--prometheus-port", "0", *args], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_line(self, text: str, timeout: float = 30.0) -> str:
        return str(wait_until(lambda: next((line for line in self.lines if text in line), None), timeout))

    def ready(self) -> Fake:
        self.wait_line(": Ready")
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=5)
        self.reader.join(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def http(method: str, url: str, body: object = None, headers: dict[str, str] | None = None,
         raw: bytes | None = None, timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    hdrs = dict(headers or {})
    if body is not None and raw is None:
        hdrs.setdefault("content-type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def auth(headers: dict[str, str] | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}", **(headers or {})}


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Fake]]:
    """Start fakes on free ports; every one is killed at teardown."""
    started: list[Fake] = []

    def _start(*args: str, **env: str) -> Fake:
        fake = Fake(list(args), base_env(tmp_path, **env))
        started.append(fake)
        return fake

    yield _start
    for fake in started:
        fake.stop()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Fake]]:
    """One embedding and one reranker fake, both behind the api key, shared by the HTTP tests."""
    tmp = tmp_path_factory.mktemp("served")
    fakes = {
        "embed": Fake(["--model-id", str(write_model(tmp / "embed")), "--api-key", KEY,
                       "--max-client-batch-size", "4", "--served-model-name", "my-embedder"], base_env(tmp)),
        "rerank": Fake(["--model-id", str(write_model(tmp / "rerank", reranker=True)), "--api-key", KEY],
                       base_env(tmp)),
    }
    try:
        for fake in fakes.values():
            fake.ready()
        yield fakes
    finally:
        for fake in fakes.values():
            fake.stop()


# command line -------------------------------------------------------------------------------------
CLAP_ERRORS = [
    (["--model-id", "m", "--foo"], {},
     f"error: unexpected argument '--foo' found\n\n{USAGE.replace('[OPTIONS] ', '')}"),
    (["--foo"], {}, f"error: unexpected argument '--foo' found\n\n{USAGE}"),
    (["--model-id", "m"], {"JSON_OUTPUT": "1"}, "error: invalid value '1' for '--json-output'\n"
                                                "  [possible values: true, false]"),
    (["--model-id", "m", "--port", "1", "--port", "2"], {},
     f"error: the argument '--port <PORT>' cannot be used multiple times\n\n{USAGE}"),
    ([], {}, "error: the following required arguments were not provided:\n  --model-id <MODEL_ID>"),
    (["--model-id", "m"], {"PORT": "abc"}, "error: invalid value 'abc' for '--port <PORT>': invalid digit found"),
    (["--model-id", "m"], {"HF_TOKEN": "a", "HF_API_TOKEN": "b"},
     "error: the argument '--hf-api-token <HF_API_TOKEN>' cannot be used with '--hf-token <HF_TOKEN>'"),
    (["--model-id", "m", "--default-prompt", "a", "--default-prompt-name", "b"], {},
     "error: the argument '--default-prompt <DEFAULT_PROMPT>' cannot be used with"),
    (["--model-id", "m", "--auto-truncate", "yes"], {}, "error: invalid value 'yes' for '--auto-truncate"),
]


@pytest.mark.parametrize(("argv", "env", "expected"), CLAP_ERRORS)
def test_clap_errors_exit_2_with_clap_text_on_stderr(tmp_path: Path, argv: list[str], env: dict[str, str],
                                                     expected: str) -> None:
    """Unknown, duplicate, conflicting, missing and badly typed arguments (CLI or env) exit 2 like clap."""
    result = run_fake(argv, base_env(tmp_path, **env))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(expected)
    assert result.stderr.endswith(TRY_HELP)


def test_version_and_help_go_to_stdout_with_exit_0(tmp_path: Path) -> None:
    """`--version` prints the TEI version line; `--help` shows usage and hides the deprecated token flag."""
    version = run_fake(["--version"], base_env(tmp_path))
    assert (version.returncode, version.stdout, version.stderr) == (0, "text-embeddings-router 1.9.3\n", "")
    helped = run_fake(["--help"], base_env(tmp_path))
    assert helped.returncode == 0 and USAGE in helped.stdout and "--hf-api-token" not in helped.stdout


PARSES = [
    (["--auto-truncate"], {}, "auto_truncate", True),
    (["--auto-truncate", "false"], {}, "auto_truncate", False),
    (["--auto-truncate=false"], {}, "auto_truncate", False),
    ([], {"AUTO_TRUNCATE": "false"}, "auto_truncate", False),
    (["--port", "2"], {"PORT": "1"}, "port", 2),
    ([], {"PORT": "1"}, "port", 1),
    (["-p80"], {}, "port", 80),
    (["-p", "81"], {}, "port", 81),
    (["--port=82"], {}, "port", 82),
    ([], {"API_KEY": ""}, "api_key", ""),
    (["--cors-allow-origin", "a", "--cors-allow-origin=b"], {}, "cors_allow_origin", ["a", "b"]),
    ([], {"CORS_ALLOW_ORIGIN": "a,b"}, "cors_allow_origin", ["a,b"]),
    (["--pooling", "last-token"], {}, "pooling", "last-token"),
    ([], {}, "payload_limit", 2000000),
]


@pytest.mark.parametrize(("argv", "env", "field", "value"), PARSES)
def test_values_follow_cli_then_env_then_default(argv: list[str], env: dict[str, str], field: str,
                                                 value: object) -> None:
    """Flags parse like TEI's clap: optional bool value, `-p`, `=`, CLI over env, empty env values kept."""
    assert cli.parse_args(["--model-id", "m", *argv], env)[field] == value


@pytest.mark.parametrize(("text", "redacted"), [
    ('"jinaai/jina-embeddings-v3"', '"jin***/****-*********s-v3"'),
    ('"BAAI/bge-m3"', '"BAA*/**e-m3"'),
    ('"abcd"', '"****"'),
])
def test_veil_partial_redaction(text: str, redacted: str) -> None:
    """Model ids and tokens are masked as veil's partial redaction does."""
    assert tei_args.veil_partial(text) == redacted


@pytest.mark.parametrize(("value", "expected"), [(0.05, "0.05"), (12.0, "12.0"), (1e-7, "1e-7"),
                                                 (0.1, "0.1"), (-0.25, "-0.25"), (1e-5, "0.00001")])
def test_f32_values_serialise_like_serde_json(value: float, expected: str) -> None:
    """Vector components are written in ryu's shortest f32 form."""
    assert fm.f32_text(fm.f32(value)) == expected


# startup and failures -----------------------------------------------------------------------------
def test_args_line_shows_api_key_in_clear_and_redacts_model_id(tmp_path: Path) -> None:
    """The first stdout line is the Args Debug: api_key in clear, model_id and hf_token partly masked."""
    env = base_env(tmp_path, FAKE_TEI_FAIL_START="1", API_KEY=KEY, HF_TOKEN="hf_abcdefghijkl")
    result = run_fake(["--model-id", "jinaai/jina-embeddings-v3", "--huggingface-hub-cache", str(tmp_path)], env)
    first = result.stdout.splitlines()[0]
    assert ' INFO text_embeddings_router: router/src/main.rs:216: Args { model_id: "jin***/****-*********s-v3"' in first
    assert f'api_key: Some("{KEY}")' in first and 'hf_token: Some("hf_a********jkl")' in first
    assert result.returncode == 1 and result.stderr.startswith("Error: Model backend is not healthy\n\nCaused by:\n")


def test_logs_carry_ansi_colour_unless_no_color_and_json_when_asked(tmp_path: Path) -> None:
    """Text logs are coloured even off a TTY; `--json-output` gives one JSON object per line."""
    model = str(write_model(tmp_path / "m"))
    env = base_env(tmp_path, FAKE_TEI_FAIL_START="1")
    del env["NO_COLOR"]
    coloured = run_fake(["--model-id", model], env)
    assert "\x1b[32m INFO\x1b[0m" in coloured.stdout.splitlines()[0]
    as_json = run_fake(["--model-id", model, "--json-output"], env)
    record = json.loads(as_json.stdout.splitlines()[0])
    assert list(record)[:3] == ["timestamp", "level", "message"] and record["message"].startswith("Args { ")


def test_hub_id_is_downloaded_into_the_cache_with_tei_log_lines(tmp_path: Path) -> None:
    """A Hub id gets TEI's download lines and a snapshot under `models--org--name`."""
    result = run_fake(["--model-id", "org/name", "--huggingface-hub-cache", str(tmp_path / "cache")],
                      base_env(tmp_path, FAKE_TEI_FAIL_START="1"))
    starting = "download_artifacts: text_embeddings_core::download: core/src/download.rs:42: Starting download"
    assert starting in result.stdout
    assert "Downloading `tokenizer.json`" in result.stdout and "Model artifacts downloaded in " in result.stdout
    snapshots = list((tmp_path / "cache" / "models--org--name" / "snapshots").glob("*/tokenizer.json"))
    assert len(snapshots) == 1 and (tmp_path / "cache" / "models--org--name" / "refs" / "main").is_file()


FAILURES = [
    ("no-config", {}, 1, "Error: `config.json` not found\n\nCaused by:\n    No such file or directory (os error 2)\n"),
    ("no-tokenizer", {}, -signal.SIGABRT, "\nthread 'main' panicked at router/src/lib.rs:"),
    ("org/absent", {"FAKE_TEI_HUB_FAIL": "1"}, 1, "Error: Could not download model artifacts\n\nCaused by:\n"
                                                  "    request error: HTTP status client error (401 Unauthorized)"),
    ("ok", {"FAKE_TEI_FAIL_START": "3"}, 3, "Error: Model backend is not healthy"),
]


@pytest.mark.parametrize(("model", "env", "code", "stderr"), FAILURES)
def test_startup_failures_exit_like_tei(tmp_path: Path, model: str, env: dict[str, str], code: int,
                                       stderr: str) -> None:
    """Missing files, Hub failures and injected start failures give TEI's stderr text and exit status."""
    (tmp_path / "no-config").mkdir()
    (write_model(tmp_path / "no-tokenizer") / "tokenizer.json").unlink()
    write_model(tmp_path / "ok")
    result = subprocess.run([sys.executable, str(FAKE), "--model-id", model, "--huggingface-hub-cache",
                             str(tmp_path / "cache")], env=base_env(tmp_path, **env), cwd=tmp_path,
                            capture_output=True, text=True, timeout=10, check=False)
    assert result.returncode == code
    assert result.stderr.startswith(stderr)


def test_busy_prometheus_port_fails_after_warmup(tmp_path: Path) -> None:
    """The transient prometheus bind fails with TEI's anyhow text and exit 1 when the port is taken."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = run_fake(["--model-id", str(write_model(tmp_path / "m")), "--hostname", "127.0.0.1",
                           "--port", str(free_port()), "--prometheus-port", str(busy.getsockname()[1])],
                          base_env(tmp_path))
    assert result.returncode == 1
    assert result.stderr == ("Error: failed to build prometheus recorder\n\nCaused by:\n"
                             "    failed to create HTTP listener: Address already in use (os error 98)\n")
    assert "Warming up model" in result.stdout and "Ready" not in result.stdout


def test_busy_main_port_fails_with_bind_error(tmp_path: Path) -> None:
    """A taken main port gives `Could not bind TCP Listener on <ip>:<port>` and exit 1."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_fake(["--model-id", str(write_model(tmp_path / "m")), "--hostname", "127.0.0.1",
                           "--port", str(port), "--prometheus-port", "0"], base_env(tmp_path))
    assert result.returncode == 1
    assert result.stderr.startswith(f"Error: Could not bind TCP Listener on 127.0.0.1:{port}\n\nCaused by:\n"
                                    "    Address already in use (os error 98)")


# signals ------------------------------------------------------------------------------------------
def test_sigterm_after_ready_drains_and_exits_0(tmp_path: Path, start: Callable[..., Fake]) -> None:
    """After Ready, SIGTERM logs the graceful-shutdown line, closes the listener and exits 0."""
    fake = start("--model-id", str(write_model(tmp_path / "m"))).ready()
    fake.proc.send_signal(signal.SIGTERM)
    assert fake.proc.wait(timeout=5) == 0
    fake.wait_line("text_embeddings_router::shutdown: router/src/shutdown.rs:27: "
                   "signal received, starting graceful shutdown")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", fake.port), timeout=1).close()


def test_sigterm_before_ready_kills_at_once(tmp_path: Path, start: Callable[..., Fake]) -> None:
    """During the model load the default action applies: the process dies by SIGTERM, nothing logged."""
    fake = start("--model-id", str(write_model(tmp_path / "m")), FAKE_TEI_LOAD_S="30")
    fake.wait_line("Starting model backend")
    fake.proc.send_signal(signal.SIGTERM)
    assert fake.proc.wait(timeout=5) == -signal.SIGTERM
    assert not any("graceful" in line for line in fake.lines)


def test_ignore_term_knob_records_and_survives(tmp_path: Path, start: Callable[..., Fake]) -> None:
    """FAKE_TEI_IGNORE_TERM keeps serving after SIGTERM; FAKE_TEI_SIGNAL_LOG records the signal."""
    log = tmp_path / "signals.log"
    fake = start("--model-id", str(write_model(tmp_path / "m")), FAKE_TEI_IGNORE_TERM="1",
                 FAKE_TEI_SIGNAL_LOG=str(log)).ready()
    fake.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: log.is_file() and log.read_text() == "TERM\n")
    assert fake.proc.poll() is None and http("GET", fake.url("/health"))[0] == 200


@pytest.mark.parametrize(("code", "status"), [("3", 3), ("-9", -signal.SIGKILL), ("-6", -signal.SIGABRT)])
def test_exit_after_knob_exits_with_the_code(tmp_path: Path, start: Callable[..., Fake], code: str,
                                             status: int) -> None:
    """FAKE_TEI_EXIT_AFTER_S/FAKE_TEI_EXIT_CODE end the fake after Ready: a code, or a signal when negative."""
    fake = start("--model-id", str(write_model(tmp_path / "m")), FAKE_TEI_EXIT_AFTER_S="0.1",
                 FAKE_TEI_EXIT_CODE=code).ready()
    assert fake.proc.wait(timeout=5) == status


def test_health_file_knob_flips_health(tmp_path: Path, start: Callable[..., Fake]) -> None:
    """/health answers TEI's 503 body while the health file says 503, and 200 otherwise."""
    flag = tmp_path / "health"
    fake = start("--model-id", str(write_model(tmp_path / "m")), FAKE_TEI_HEALTH_FILE=str(flag)).ready()
    assert http("GET", fake.url("/health"))[0] == 200
    flag.write_text("503")
    assert http("GET", fake.url("/health"))[::2] == (503, b'{"error":"unhealthy","error_type":"Unhealthy"}')
    flag.unlink()
    assert http("GET", fake.url("/health"))[0] == 200


# HTTP ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("header", [None, f"bearer {KEY}", f"Bearer {KEY} ", f"Bearer  {KEY}", "Bearer wrong"])
def test_info_needs_the_exact_bearer_header(served: dict[str, Fake], header: str | None) -> None:
    """Anything but `Bearer <key>` byte for byte is a 401 with an empty body; /health stays public."""
    fake = served["embed"]
    status, _, body = http("GET", fake.url("/info"), headers={"Authorization": header} if header else {})
    assert (status, body) == (401, b"")
    assert http("GET", fake.url("/health"))[::2] == (200, b"")


def test_info_fields_in_tei_order(served: dict[str, Fake]) -> None:
    """/info lists TEI's fields in order, with served_model_name and the model type."""
    status, headers, body = http("GET", served["embed"].url("/info"), headers=auth())
    info = json.loads(body)
    assert status == 200 and headers["content-type"] == "application/json"
    assert list(info) == ["model_id", "model_sha", "model_dtype", "served_model_name", "model_type",
                          "max_concurrent_requests", "max_input_length", "max_batch_tokens", "max_batch_requests",
                          "max_client_batch_size", "auto_truncate", "tokenization_workers", "version", "sha",
                          "docker_label"]
    assert info["served_model_name"] == "my-embedder" and info["model_type"] == {"embedding": {"pooling": "cls"}}
    assert info["version"] == "1.9.3" and info["max_client_batch_size"] == 4


def test_embed_returns_nested_normalised_deterministic_vectors(served: dict[str, Fake]) -> None:
    """/embed always nests, gives 384 unit-length dims, the same vector for the same text, and TEI headers."""
    url = served["embed"].url("/embed")
    status, headers, body = http("POST", url, {"inputs": ["hello world", "other"]}, auth())
    vectors = json.loads(body)
    assert status == 200 and len(vectors) == 2 and all(len(v) == 384 for v in vectors)
    assert math.isclose(math.sqrt(sum(x * x for x in vectors[0])), 1.0, rel_tol=1e-4)
    assert headers["x-compute-type"] == "gpu+optimized" and int(headers["x-compute-characters"]) == 16
    single = json.loads(http("POST", url, {"inputs": "hello world"}, auth())[2])
    assert single == [vectors[0]]


def test_openai_shape_model_usage_and_base64(served: dict[str, Fake]) -> None:
    """OpenAI route: list object, model = served name, equal token counts, base64 = little-endian f32."""
    url = served["embed"].url("/v1/embeddings")
    plain = json.loads(http("POST", url, {"input": ["a b", "c"], "model": "x"}, auth())[2])
    assert plain["object"] == "list" and plain["model"] == "my-embedder"
    assert [d["index"] for d in plain["data"]] == [0, 1] and plain["data"][0]["object"] == "embedding"
    assert plain["usage"]["prompt_tokens"] == plain["usage"]["total_tokens"] == 7
    packed = json.loads(http("POST", url, {"input": "a b", "encoding_format": "base64"}, auth())[2])
    raw = base64.b64decode(packed["data"][0]["embedding"])
    assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == pytest.approx(plain["data"][0]["embedding"], rel=1e-6)


def test_rerank_sorts_by_score_with_optional_text(served: dict[str, Fake]) -> None:
    """/rerank returns every index once, highest score first, text only when asked."""
    body = {"query": "what is deep learning", "texts": ["cooking pasta", "deep learning is a method"],
            "return_text": True}
    ranks = json.loads(http("POST", served["rerank"].url("/rerank"), body, auth())[2])
    assert [r["index"] for r in ranks] == [1, 0]
    assert ranks[0]["text"] == "deep learning is a method" and ranks[0]["score"] > ranks[1]["score"]
    bare = json.loads(http("POST", served["rerank"].url("/rerank"), {"query": "q", "texts": ["a"]}, auth())[2])
    assert list(bare[0]) == ["index", "score"]


ERRORS = [
    ("embed", "/embed", {"inputs": ["a"] * 5}, 422,
     {"error": "batch size 5 > maximum allowed batch size 4", "error_type": "Validation"}),
    ("embed", "/embed", {"inputs": ""}, 400,
     {"error": "Input validation error: `inputs` cannot be empty", "error_type": "Empty"}),
    ("embed", "/embed", {"inputs": []}, 400,
     {"error": "Input validation error: `inputs` cannot be empty", "error_type": "Empty"}),
    ("embed", "/rerank", {"query": "q", "texts": ["a"]}, 424,
     {"error": "Backend error: model is not a re-ranker model", "error_type": "Backend"}),
    ("embed", "/rerank", {"query": "q", "texts": []}, 400, {"error": "`texts` cannot be empty", "error_type": "Empty"}),
    ("rerank", "/embed", {"inputs": "a"}, 424,
     {"error": "Backend error: Model is not an embedding model", "error_type": "Backend"}),
    ("embed", "/v1/embeddings", {"input": ["a"] * 5}, 422,
     {"message": "batch size 5 > maximum allowed batch size 4", "code": 422, "type": "Validation"}),
]


@pytest.mark.parametrize(("which", "path", "body", "status", "error"), ERRORS)
def test_json_errors_use_tei_status_and_pascal_case_type(served: dict[str, Fake], which: str, path: str,
                                                        body: object, status: int, error: dict) -> None:
    """Handler errors are JSON with PascalCase error_type; the OpenAI route uses the flat shape."""
    got_status, headers, got = http("POST", served[which].url(path), body, auth())
    assert (got_status, json.loads(got)) == (status, error)
    assert headers["content-type"] == "application/json"


REJECTIONS = [
    ("POST", "/nope", None, {}, 404, b""),
    ("GET", "/embed", None, {}, 405, b""),
    ("POST", "/embed", None, {"content-type": "text/plain"}, 415,
     b"Expected request with `Content-Type: application/json`"),
    ("POST", "/embed", b"{oops", {"content-type": "application/json"}, 400, None),
    ("POST", "/embed", b'{"x": 1}', {"content-type": "application/json"}, 422,
     b"Failed to deserialize the JSON body into the target type: missing field `inputs`"),
    ("POST", "/decode", b'{"ids": [[{}]]}', {"content-type": "application/json"}, 422,
     b"Failed to deserialize the JSON body into the target type: ids: data did not match any variant of untagged "
     b"enum InputIds"),
    ("POST", "/decode", b'{"ids": [1, -1]}', {"content-type": "application/json"}, 422, None),
    ("POST", "/embed", b'{"inputs": "' + b"x" * 2_000_001 + b'"}', {"content-type": "application/json"}, 413,
     b"Failed to buffer the request body: length limit exceeded"),
]


@pytest.mark.parametrize(("method", "path", "raw", "headers", "status", "prefix"), REJECTIONS)
def test_axum_rejections_are_plain_text(served: dict[str, Fake], method: str, path: str, raw: bytes | None,
                                       headers: dict[str, str], status: int, prefix: bytes | None) -> None:
    """Routing and extractor failures keep axum's statuses and plain-text bodies."""
    got_status, got_headers, body = http(method, served["embed"].url(path), headers=auth(headers), raw=raw)
    assert got_status == status
    if prefix is not None:
        assert body.startswith(prefix)
    if body:
        assert got_headers["content-type"] == "text/plain; charset=utf-8"
    if status == 400:
        assert body.startswith(b"Failed to parse the request body as JSON: ")


# more knobs ---------------------------------------------------------------------------------------
def test_graceful_shutdown_waits_for_in_flight_request(tmp_path: Path, start: Callable[..., Fake]) -> None:
    """A request in flight when SIGTERM arrives still gets its 200 before the process exits 0."""
    fake = start("--model-id", str(write_model(tmp_path / "m")), FAKE_TEI_REQUEST_DELAY_S="0.5").ready()
    result: list[int] = []
    client = threading.Thread(target=lambda: result.append(http("POST", fake.url("/embed"), {"inputs": "hi"})[0]))
    client.start()
    wait_until(lambda: b'te_request_count{method="single"} 1' in http("GET", fake.url("/metrics"))[2])
    fake.proc.send_signal(signal.SIGTERM)
    assert fake.proc.wait(timeout=5) == 0
    client.join(timeout=5)
    assert result == [200]


def test_spawn_grandchild_shares_the_process_group(tmp_path: Path, start: Callable[..., Fake]) -> None:
    """FAKE_TEI_SPAWN_GRANDCHILD starts `sleep 600` in the fake's group and writes its pid."""
    pid_file = tmp_path / "grandchild.pid"
    fake = start("--model-id", str(write_model(tmp_path / "m")), FAKE_TEI_SPAWN_GRANDCHILD="1",
                 FAKE_TEI_GRANDCHILD_PID_FILE=str(pid_file)).ready()
    pid = int(str(wait_until(lambda: pid_file.is_file() and pid_file.read_text())))
    try:
        assert os.getpgid(pid) == os.getpgid(fake.proc.pid)
    finally:
        os.kill(pid, signal.SIGKILL)


def test_spew_floods_stdout_while_serving(tmp_path: Path, start: Callable[..., Fake]) -> None:
    """FAKE_TEI_SPEW_BYTES writes at least that many bytes of log lines after Ready; HTTP keeps answering."""
    fake = start("--model-id", str(write_model(tmp_path / "m")), FAKE_TEI_SPEW_BYTES="300000").ready()
    wait_until(lambda: sum(len(line) for line in fake.lines) > 300000)
    assert http("GET", fake.url("/health"))[0] == 200


def test_empty_api_key_env_turns_auth_on_with_bare_bearer(tmp_path: Path, start: Callable[..., Fake]) -> None:
    """API_KEY="" still counts: the expected header is exactly `Bearer ` with its trailing space."""
    fake = start("--model-id", str(write_model(tmp_path / "m")), API_KEY="").ready()
    assert http("GET", fake.url("/info"))[0] == 401
    assert http("GET", fake.url("/info"), headers={"Authorization": "Bearer "})[0] == 200


# the wire -----------------------------------------------------------------------------------------
class Wire:
    """A connection stand-in for Handler unit tests: the request comes from bytes, every sendall is recorded."""

    def __init__(self, request: bytes) -> None:
        self.request, self.writes = io.BytesIO(request), list[bytes]()

    def makefile(self, mode: str, *_args: object) -> io.BytesIO:
        assert "r" in mode  # http.server writes through sendall (wbufsize 0)
        return self.request

    def sendall(self, data: bytes) -> None:
        self.writes.append(bytes(data))


def test_an_answer_leaves_in_one_write_head_and_body_together() -> None:
    """hyper hands the head and a full body to one `writev` (router/src/http/server.rs serves with axum on
    hyper); a stand-in that writes the head first adds a Nagle/delayed-ACK stall behind a proxy."""
    server = fake_server.FakeTeiServer(("127.0.0.1", 0), engine=None,  # type: ignore[arg-type]
                                       settings=fake_server.Settings(None, 1 << 20, None), ipv6=False)
    try:
        wire = Wire(b"GET /docs/ HTTP/1.1\r\nhost: x\r\n\r\n")
        fake_server.Handler(wire, ("127.0.0.1", 1), server)  # type: ignore[arg-type]
    finally:
        server.server_close()
    assert len(wire.writes) == 1, wire.writes
    head, _, body = wire.writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and body == fake_server.DOCS_HTML


def read_response(port: int, request: bytes) -> tuple[bytes, bytes]:
    """(head, body as received until the server closed) of one raw HTTP/1.1 exchange with `connection: close`."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(1 << 16):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


def embed_request(inputs: list[str]) -> bytes:
    body = json.dumps({"inputs": inputs}).encode()
    return (b"POST /embed HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body))


def test_die_mid_body_sends_half_a_large_answer_then_dies(tmp_path: Path, start: Callable[..., Fake]) -> None:
    """FAKE_TEI_DIE_MID_BODY=1: an answer over 64 KiB goes out as the head and half its body, then the process is
    killed (as by the OOM killer): the client sees a short body and a closed connection. Small answers are whole."""
    fake = start("--model-id", str(write_model(tmp_path / "m")), FAKE_TEI_DIE_MID_BODY="1").ready()
    head, body = read_response(fake.port, embed_request(["small"]))
    assert head.startswith(b"HTTP/1.1 200 OK") and json.loads(body)  # ~8 KB: whole
    head, body = read_response(fake.port, embed_request([f"text {i}" for i in range(16)]))
    length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
    assert head.startswith(b"HTTP/1.1 200 OK") and length > 64 << 10
    assert 0 < len(body) < length, (len(body), length)
    assert fake.proc.wait(timeout=30) == -signal.SIGKILL


def test_listen_backlog_is_tokios_1024(tmp_path: Path, start: Callable[..., Fake]) -> None:
    """tokio's `TcpListener::bind` listens with a backlog of 1024: a burst of connections to a server that is not
    accepting (stopped here) completes its handshakes; with socketserver's 5 all but ~6 would wait for SYN retries."""
    fake = start("--model-id", str(write_model(tmp_path / "m")), "--max-concurrent-requests", "2048").ready()
    socks: list[socket.socket] = []
    os.kill(fake.proc.pid, signal.SIGSTOP)
    try:
        for _ in range(100):
            sock = socket.socket()
            sock.setblocking(False)
            socks.append(sock)
            assert sock.connect_ex(("127.0.0.1", fake.port)) in (0, errno.EINPROGRESS)

        def connected() -> bool:
            _, writable, _ = select.select([], [s for s in socks if s.fileno() >= 0], [], 0.5)
            return len(writable) == len(socks) and all(s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
                                                       for s in socks)
        wait_until(connected, 30)
    finally:
        os.kill(fake.proc.pid, signal.SIGCONT)
        for sock in socks:
            sock.close()
    assert http("GET", fake.url("/health"), timeout=30)[0] == 200


def test_gateway_harness_gives_tei_the_production_permits(tmp_path: Path) -> None:
    """The gateway tests' TEI gets the launcher's --max-concurrent-requests default (TEI's own is 512), so 429s
    come where production's would, not at a test-only 8192."""
    from gateway_harness import PERMITS, Tei

    from embed_launcher.config.variables import TUNABLES

    tei = Tei(tmp_path, "org/embed", "embed", free_port()).start()
    try:
        tei.wait_ready(timeout_s=30)
        info = json.loads(http("GET", tei.url + "/info", timeout=30)[2])
    finally:
        tei.kill()
    default = next(t.embed_default for t in TUNABLES if t.suffix == "MAX_CONCURRENT_REQUESTS")
    assert PERMITS == default == "2048" and info["max_concurrent_requests"] == 2048
