"""Real processes for the gateway tests: TEI stand-ins on 127.0.0.1 and the gateway in front of them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from conftest import FAKE_TEI, free_port, free_ports, wait_for_output, wait_until, write_model

from embed_launcher.config.variables import TUNABLES

EMBED_KEY, RERANK_KEY = "embed-test-key", "rerank-test-key"
# The permits production gives each TEI (the launcher's EMBED_/RERANK_MAX_CONCURRENT_REQUESTS default), so the
# gateway tests meet TEI's 429s where production would.
PERMITS = next(t.embed_default for t in TUNABLES if t.suffix == "MAX_CONCURRENT_REQUESTS")
CREATED = 1764230000


@dataclass
class Tei:
    """One TEI stand-in serving ``name`` on a fixed port, so it can be killed and started again there."""

    tmp: Path
    name: str
    kind: str
    port: int
    key: str | None = None
    batch: int = 512
    permits: str = PERMITS
    knobs: dict[str, str] = field(default_factory=dict)
    prompts: dict[str, str] = field(default_factory=dict)  # the model's Sentence Transformers prompts
    proc: subprocess.Popen[bytes] | None = None
    args: list[str] = field(default_factory=list)  # more TEI flags, e.g. ["--max-batch-requests", "1"]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, **knobs: object) -> Tei:
        folder = write_model(self.tmp / "models" / self.name.replace("/", "--"), self.kind == "rerank")
        if self.prompts:
            (folder / "config_sentence_transformers.json").write_text(json.dumps({"prompts": self.prompts}))
        argv = [sys.executable, str(FAKE_TEI), "--model-id", str(folder), "--served-model-name", self.name,
                "--hostname", "127.0.0.1", "--port", str(self.port), "--prometheus-port", "0",
                "--max-client-batch-size", str(self.batch), "--max-concurrent-requests", self.permits]
        if self.kind == "sparse":
            argv += ["--pooling", "splade"]
        argv += self.args
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NO_COLOR": "1", "FAKE_TEI_LOAD_S": "0.05",
               **self.knobs, **{f"FAKE_TEI_{k.upper()}": str(v) for k, v in knobs.items()}}
        if self.key:
            env["API_KEY"] = self.key
        log = open(self.tmp / f"tei-{self.port}.log", "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        return self

    def wait_ready(self, timeout_s: float = 10.0) -> Tei:
        def up() -> bool:
            try:
                return httpx.get(self.url + "/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, timeout_s)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


@dataclass
class Gateway:
    """The gateway process (`python -m embed_launcher.gateway`) and its output file."""

    proc: subprocess.Popen[bytes]
    log: Path
    ports: list[int]

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def url(self, path: str = "", port_index: int = 0) -> str:
        return f"http://127.0.0.1:{self.ports[port_index]}{path}"

    def wait_for(self, text: str, timeout_s: float = 15.0) -> None:
        wait_for_output(self.proc, self.output, text, timeout_s, who="gateway")

    def wait_healthy(self, timeout_s: float = 15.0) -> None:
        wait_until(lambda: httpx.get(self.url("/health"), timeout=2).status_code == 200, timeout_s)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=15)


def model_entry(tei: Tei, *, aliases: list[str], default: bool) -> dict[str, object]:
    return {"name": tei.name, "aliases": aliases, "kind": tei.kind, "upstream": tei.url,
            "max_client_batch_size": tei.batch, "default": default}


def start_gateway(tmp: Path, models: list[dict[str, object]], *, keys: tuple[str, str] | None = (EMBED_KEY,
                  RERANK_KEY), workers: int = 1, wait_s: float = 10.0, env: dict[str, str] | None = None,
                  **extra: object) -> Gateway:
    ports = free_ports(2)
    config = {"listen": [{"host": "127.0.0.1", "port": ports[0], "routes": "all"},
                         {"host": "127.0.0.1", "port": ports[1], "routes": "rerank"}],
              "models": models, "wait_s": wait_s, "access_log": False, "workers": workers, "created": CREATED,
              **extra}
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "EMBED_GATEWAY_CONFIG": json.dumps(config), **(env or {})}
    if keys:
        env["EMBED_GATEWAY_EMBED_KEY"], env["EMBED_GATEWAY_RERANK_KEY"] = keys
    log = tmp / f"gateway-{ports[0]}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "embed_launcher.gateway"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    gateway = Gateway(proc, log, ports)
    gateway.wait_for("Gateway ready")
    return gateway


@dataclass
class Stack:
    """Three stand-ins (two embedders, one reranker), a sparse one, and a gateway in front of them all."""

    small: Tei
    m3: Tei
    splade: Tei
    reranker: Tei
    gateway: Gateway

    @property
    def teis(self) -> list[Tei]:
        return [self.small, self.m3, self.splade, self.reranker]


def make_teis(tmp: Path, batch: int = 512, permits: str = PERMITS) -> list[Tei]:
    ports = free_ports(4)
    return [Tei(tmp, "BAAI/bge-small-en-v1.5", "embed", ports[0], EMBED_KEY, batch, permits),
            Tei(tmp, "BAAI/bge-m3", "embed", ports[1], EMBED_KEY, batch),
            Tei(tmp, "naver/splade", "sparse", ports[2], EMBED_KEY, batch),
            Tei(tmp, "BAAI/bge-reranker-v2-m3", "rerank", ports[3], RERANK_KEY, batch)]


def stack_models(small: Tei, m3: Tei, splade: Tei, reranker: Tei) -> list[dict[str, object]]:
    return [model_entry(small, aliases=["small"], default=True), model_entry(m3, aliases=[], default=False),
            model_entry(splade, aliases=[], default=True), model_entry(reranker, aliases=["reranker"], default=True)]


def start_stack(tmp: Path, batch: int = 512, permits: str = PERMITS, knobs: dict[str, str] | None = None,
                **gateway: object) -> Stack:
    """The four stand-ins (``knobs``: more environment for each, e.g. FAKE_TEI_REQUEST_ID_LOG) and a gateway
    configured with ``gateway``, healthy."""
    teis = make_teis(tmp, batch, permits)
    for tei in teis:
        tei.knobs = dict(knobs or {})
        tei.start()
    for tei in teis:
        tei.wait_ready()
    small, m3, splade, reranker = teis
    stack = Stack(small, m3, splade, reranker, start_gateway(tmp, stack_models(*teis), **gateway))  # type: ignore[arg-type]
    stack.gateway.wait_healthy()
    return stack


def stop_stack(stack: Stack) -> None:
    try:
        stack.gateway.stop()
    finally:
        if stack.gateway.proc.poll() is None:
            stack.gateway.proc.kill()
        for tei in stack.teis:
            tei.kill()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One stack shared by a module's read-only tests (each start costs about a second)."""
    running = start_stack(tmp_path_factory.mktemp("stack"))
    yield running
    stop_stack(running)


def auth(key: str = EMBED_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


_ = free_port  # re-exported for the test modules


def requests_received(tei: Tei) -> int:
    """Requests a stand-in received: its te_request_count, summed over TEI's `method` label."""
    text = httpx.get(tei.url + "/metrics").text
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
               if line.split("{", 1)[0].split(" ", 1)[0] == "te_request_count")  # fmt: skip


class RawTei:
    """A TEI-like server in this process, for faults the stand-in cannot make: ``answer(handler)`` writes
    whatever it likes (half a body, nothing, a reset). /health answers 200 unless ``health`` says otherwise.

    Records each request's (method, path, body) in ``received``, and every /health probe in ``probes``.
    """

    def __init__(self, answer: Callable[[BaseHTTPRequestHandler, bytes], None],
                 health: Callable[[BaseHTTPRequestHandler], None] | None = None) -> None:
        self.received: list[tuple[str, str, bytes]] = []
        self.probes = 0
        self.stopping = threading.Event()
        raw = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                if self.path == "/health":
                    raw.probes += 1
                    if health is not None:
                        health(self)
                        return
                reply(self, 200, b"")

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                raw.received.append(("POST", self.path, body))
                answer(self, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def entry(self, name: str = "raw", kind: str = "embed", batch: int = 512) -> dict[str, object]:
        return {"name": name, "aliases": [], "kind": kind, "upstream": self.url, "max_client_batch_size": batch,
                "default": True}

    def close(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()


def reply(handler: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str = "application/json",
          headers: dict[str, str] | None = None) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


def drop(handler: BaseHTTPRequestHandler) -> None:
    """Close the connection without a word, as a TEI that crashed on the request would."""
    handler.close_connection = True
    handler.connection.shutdown(socket.SHUT_RDWR)
