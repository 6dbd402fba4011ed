"""HTTP layer of the TEI stand-in: axum-like routing, Bearer auth, CORS, body limit, rejections, drain."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping
from email.message import Message
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from fake_tei import model as fm
from fake_tei import routes as fr
from fake_tei.api import ApiError, Engine, Timing
from fake_tei.backend import ClientGone
from fake_tei.schema import Body, Rejection, is_json_content_type, parse_json, where_clause

PUBLIC_GET = {"/health", "/", "/ping", "/metrics", "/docs", "/docs/", "/api-doc/openapi.json"}
PROTECTED = set(fr.POST_ROUTES) | {"/info", "/", "/invocations"}
UNHEALTHY = {"error": "unhealthy", "error_type": "Unhealthy"}
DOCS_HTML = b"<!doctype html><html><head><title>Swagger UI</title></head><body>fake TEI docs</body></html>"
OPENAPI = {"openapi": "3.0.3", "info": {"title": "Text Embeddings Inference", "version": "1.9.3"}, "paths": {}}
# FAKE_TEI_DIE_MID_BODY=1: an answer whose body is bigger than this dies half-way (a 384-dim vector is ~8 KB of JSON).
DIE_MID_BODY_MIN = 64 << 10
# FAKE_TEI_REQUEST_ID_LOG=<path>: a test-only record of the request-id headers each request carried (TEI
# itself logs no request headers): one JSON line per request, one O_APPEND write, so threads never interleave.
REQUEST_ID_LOG = os.environ.get("FAKE_TEI_REQUEST_ID_LOG")


def record_request_ids(path: str, method: str, target: str, headers: Message) -> None:
    line = json.dumps({"method": method, "path": target, "x-request-id": headers.get("x-request-id"),
                       "traceparent": headers.get("traceparent")}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


class Settings:
    """What the HTTP layer needs besides the engine: auth, limits, CORS."""

    def __init__(self, api_key: str | None, payload_limit: int, cors: list[str] | None,
                 die_mid_body: bool = False) -> None:
        self.auth = None if api_key is None else ("Bearer " + api_key).encode("utf-8", "surrogateescape")
        self.payload_limit, self.cors, self.die_mid_body = payload_limit, cors, die_mid_body


class FakeTeiServer(ThreadingHTTPServer):
    """A threading server that can drain: stop accepting, close idle keep-alive connections, await the rest."""

    # tokio's `TcpListener::bind` listens with a backlog of 1024 (socketserver's default is 5, which drops
    # bursts of connections: their SYNs are retried after 1 s).
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], engine: Engine, settings: Settings, ipv6: bool) -> None:
        self.address_family = socket.AF_INET6 if ipv6 else socket.AF_INET
        self.engine, self.settings = engine, settings
        self.draining = False
        self.idle: set[socket.socket] = set()
        self.idle_lock = threading.Lock()
        self.workers: list[threading.Thread] = []
        super().__init__(address, Handler)

    def process_request(self, request, client_address) -> None:
        # Daemon threads, so an exit is never held up, but tracked so a drain can await them
        # (socketserver only tracks non-daemon threads).
        worker = threading.Thread(target=self.process_request_thread, args=(request, client_address), daemon=True)
        with self.idle_lock:
            self.workers = [t for t in self.workers if t.is_alive()] + [worker]
        worker.start()

    def server_close(self) -> None:
        super().server_close()
        with self.idle_lock:
            workers = list(self.workers)
        for worker in workers:
            worker.join()

    def handle_error(self, request, client_address) -> None:
        # A client that gave up (a timed-out /health, a killed load generator) makes the late answer fail
        # with EPIPE or ECONNRESET; hyper logs nothing then. Anything else is a bug in the fake: show it.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as tokio's TcpListener does
        socket.socket.bind(self.socket, self.server_address)
        self.server_address = self.socket.getsockname()

    def mark_idle(self, sock: socket.socket, idle: bool) -> None:
        with self.idle_lock:
            (self.idle.add if idle else self.idle.discard)(sock)

    def drain(self) -> None:
        """hyper's graceful shutdown: refuse new connections, close idle ones, wait for in-flight requests."""
        self.draining = True
        self.shutdown()
        self.socket.close()
        with self.idle_lock:
            for sock in list(self.idle):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self.server_close()


class Handler(BaseHTTPRequestHandler):
    """One connection; HTTP/1.1 keep-alive like hyper."""

    protocol_version = "HTTP/1.1"
    server: FakeTeiServer

    def handle(self) -> None:
        # Idle (between requests) connections are registered so a drain can close them, as hyper does.
        self.close_connection = False
        while not self.close_connection:
            self.server.mark_idle(self.connection, True)
            if self.server.draining:
                break
            self.handle_one_request()
        self.server.mark_idle(self.connection, False)

    def parse_request(self) -> bool:
        self.server.mark_idle(self.connection, False)
        return super().parse_request()

    def log_message(self, format: str, *args: object) -> None:  # TEI logs no access lines
        pass

    def __getattr__(self, name: str):  # every method goes through one dispatcher, as in axum
        if name.startswith("do_"):
            return lambda: self.dispatch(name[3:])
        raise AttributeError(name)

    # responses -----------------------------------------------------------------------------
    def reply(self, status: int, body: bytes = b"", content_type: str | None = None,
              headers: Mapping[str, str] | None = None) -> None:
        self.send_response_only(status)
        if content_type:
            self.send_header("content-type", content_type)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("content-length", str(len(body)))
        self.send_header("date", formatdate(usegmt=True))
        if self.server.draining:
            self.close_connection = True
            self.send_header("connection", "close")
        self.holding_head = True
        try:
            self.end_headers()
        finally:
            self.holding_head = False
        self.send_all(body if self.command != "HEAD" else b"")

    def flush_headers(self) -> None:
        # hyper queues the head and a full body and hands both to one `writev`, so a small answer leaves in
        # one segment; `send_all` does the same. (http.server writes the head on its own, which with Nagle
        # on costs ~40 ms behind a proxy that delays its ACK.) Error pages of http.server itself still come here.
        if not getattr(self, "holding_head", False):
            super().flush_headers()

    def end_headers(self) -> None:
        for key, value in self.cors_headers().items():
            self.send_header(key, value)
        super().end_headers()

    def send_all(self, body: bytes) -> None:
        """Head and body in one `sendall`: the kernel takes what fits the socket buffer and the rest follows as
        it drains, as hyper's flush loop writes a large body in pieces. FAKE_TEI_DIE_MID_BODY cuts it."""
        held: list[bytes] = getattr(self, "_headers_buffer", [])
        head = b"".join(held)
        held.clear()
        if self.server.settings.die_mid_body and len(body) > DIE_MID_BODY_MIN:
            self.connection.sendall(head + body[:len(body) // 2])
            os.kill(os.getpid(), signal.SIGKILL)  # abrupt, as the OOM killer would: no drain, no exit code
            os._exit(137)  # not reached
        self.connection.sendall(head + body)

    def reply_json(self, status: int, payload: object, headers: Mapping[str, str] | None = None) -> None:
        self.reply(status, fm.dumps(payload).encode("utf-8"), "application/json", headers)

    def reply_text(self, status: int, text: str) -> None:
        self.reply(status, text.encode("utf-8"), "text/plain; charset=utf-8")

    def cors_headers(self) -> dict[str, str]:
        origin, allowed = self.headers.get("origin"), self.server.settings.cors
        if origin is None:
            return {}
        if allowed is None or "*" in allowed:
            return {"access-control-allow-origin": "*", "vary": "origin, access-control-request-method, "
                    "access-control-request-headers"}
        return {"access-control-allow-origin": origin, "vary": "origin"} if origin in allowed else {"vary": "origin"}

    # dispatch ------------------------------------------------------------------------------
    def dispatch(self, method: str) -> None:
        self.body_read = False
        path = urlsplit(self.path).path
        if REQUEST_ID_LOG:
            record_request_ids(REQUEST_ID_LOG, method, path, self.headers)
        get_like = method in ("GET", "HEAD")
        if method == "OPTIONS" and "access-control-request-method" in self.headers:
            return self.reply(200, headers={"access-control-allow-methods": "GET,POST",
                                            "access-control-allow-headers": "content-type"})
        if path not in PUBLIC_GET and path not in PROTECTED:
            return self.discard_and(lambda: self.reply(404))
        if path in PUBLIC_GET and get_like:
            return self.public(path)
        if path in PROTECTED and path not in PUBLIC_GET and not self.authorised():
            return self.discard_and(lambda: self.reply(401))
        if path == "/info" and get_like:
            return self.reply_json(200, self.server.engine.info_body())
        if method != "POST" or path == "/info" or path not in PROTECTED:
            allow = "GET,HEAD" if path in PUBLIC_GET or path == "/info" else "POST"
            return self.discard_and(lambda: self.reply(405, headers={"allow": allow}))
        if not self.authorised():
            return self.discard_and(lambda: self.reply(401))
        endpoint = fr.POST_ROUTES.get(path) or fr.default_route(self.server.engine)
        self.inference(endpoint)

    def client_gone(self) -> bool:
        """Whether the peer closed the connection (EOF or reset) while its request waits, as hyper notices."""
        try:
            return self.connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False  # still connected, nothing (or a pipelined request) to read
        except OSError:
            return True

    def authorised(self) -> bool:
        expected = self.server.settings.auth
        if expected is None:
            return True
        values = [v.encode("latin-1", "surrogateescape") for v in self.headers.get_all("authorization", [])]
        return bool(values) and values[0] == expected  # exact bytes: no trimming, case-sensitive

    def discard_and(self, respond) -> None:
        length = 0 if self.body_read else int(self.headers.get("content-length") or 0)
        if 0 < length <= 1 << 20:
            self.rfile.read(length)
        elif length:
            self.close_connection = True
        respond()

    def public(self, path: str) -> None:
        if path in ("/health", "/", "/ping"):
            return self.health()
        if path == "/metrics":  # served by the HTTP layer: never waits for the backend thread
            return self.reply(200, self.server.engine.metrics.render().encode(), "text/plain; charset=utf-8")
        if path == "/docs":
            return self.reply(303, headers={"location": "/docs/"})
        if path == "/docs/":
            return self.reply(200, DOCS_HTML, "text/html; charset=utf-8")
        self.reply_json(200, OPENAPI)

    def health(self) -> None:
        """A command on the backend thread: waits behind the batch in progress, never answers when it hangs."""
        if self.server.engine.backend.health():
            return self.reply(200)
        self.reply_json(503, UNHEALTHY)

    # inference -----------------------------------------------------------------------------
    def read_body(self) -> bytes:
        """axum's `Json` extractor: content type (415), then the body limit (413), then JSON (400)."""
        if not is_json_content_type(self.headers.get("content-type")):
            raise Rejection(415, "Expected request with `Content-Type: application/json`")
        length = int(self.headers.get("content-length") or 0)
        if length > self.server.settings.payload_limit:
            self.close_connection = True
            self.body_read = True
            while 0 < length <= 64 << 20:  # swallow it so the client sees the 413 rather than a reset
                chunk = self.rfile.read(min(1 << 16, length))
                length = length - len(chunk) if chunk else 0
            raise Rejection(413, "Failed to buffer the request body: length limit exceeded")
        self.body_read = True
        return self.rfile.read(length) if length else b""

    def inference(self, endpoint: fr.Endpoint) -> None:
        engine, timing = self.server.engine, Timing(started=time.monotonic(), client_gone=self.client_gone)
        try:
            raw = self.read_body()
            text = raw.decode("utf-8", errors="replace")
            body = Body(parse_json(raw), endpoint.struct, where_clause(text))
            payload = endpoint.handler(engine, body, timing)
        except Rejection as rejection:
            status, text = rejection.status, rejection.text
            return self.discard_and(lambda: self.reply_text(status, text))
        except ClientGone:  # hyper dropped the handler: nothing is written, the connection is closed
            self.close_connection = True
            return
        except ApiError as err:
            engine.metrics.counter("te_request_failure", err.failures, err=err.err)
            engine.log_error(endpoint.span, err)
            return self.reply_json(err.status, err.body(endpoint.openai))
        if timing.success is not None:
            engine.metrics.counter("te_request_success", method=timing.success)
        if endpoint.success_line is None:
            return self.reply_json(200, payload)
        timing.record_metrics(engine.metrics)
        engine.log_success(endpoint.span, endpoint.success_line, timing)
        self.reply_json(200, payload, timing.headers())
