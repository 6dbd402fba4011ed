"""A local Hugging Face Hub stand-in that the real huggingface_hub client can talk to (stdlib only).

    with HubStandIn() as hub:                      # 127.0.0.1, a free port
        pull_model("BAAI/bge-m3", endpoint=hub.endpoint, ...)
        hub.log                                   # every request, with the body bytes sent

Serves ``GET /api/models/{repo}[/revision/{rev}]`` (``?blobs=true`` adds sizes and LFS info),
``GET /api/models/{repo}/tree/{rev}`` (what ``snapshot_download`` lists) and ``HEAD``/``GET
/{repo}/resolve/{rev}/{path}`` with the headers huggingface_hub 2.x needs (X-Repo-Commit, ETag,
X-Linked-Etag, X-Linked-Size, Content-Length, Range → 206) and the Hub's error headers
(X-Error-Code / X-Error-Message). The synthetic repositories (`catalog`) mirror real file lists;
their catalog lives in repos.py.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from fake_hub.repos import FakeFile, FakeRepo, catalog

VALID_TOKENS = frozenset({"hf_granted", "hf_not_granted"})
INVALID_TOKEN_MESSAGE = "Invalid credentials in Authorization header"
SEND_CHUNK = 16 * 1024

_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/(?P<kind>revision|tree)/(?P<rev>[^/]+))?/?$")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")


@dataclass(frozen=True)
class Access:
    """One request as the stand-in saw it."""

    method: str
    path: str  # URL path, unquoted, without the query
    status: int
    bytes_sent: int  # body bytes only
    range: str | None


@dataclass
class _Failure:
    at_byte: int
    times: int


@dataclass
class HubStandIn:
    """The server; start() binds 127.0.0.1:0, stop() shuts it down (the endpoint then refuses)."""

    repos: dict[str, FakeRepo] = field(default_factory=catalog)
    tokens: frozenset[str] = VALID_TOKENS
    chunk_delay_s: float = 0.0  # pause between 16 KiB body chunks, to make downloads slow
    log: list[Access] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: dict[tuple[str, str], _Failure] = {}
        self._server: ThreadingHTTPServer | None = None
        self._connections: set[socket.socket] = set()
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> HubStandIn:
        handler = type("Handler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name="hub-stand-in")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the listener AND every kept-alive connection, so the endpoint is really gone."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            for conn in self._connections:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._connections.clear()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> HubStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "start() the stand-in first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- knobs and records -----------------------------------------------------------------
    def fail_file(self, repo_id: str, path: str, at_byte: int, times: int = 1) -> None:
        """The next ``times`` GETs of this file that cover ``at_byte`` drop the connection there."""
        self._failures[(repo_id, path)] = _Failure(at_byte, times)

    def track(self, conn: socket.socket, alive: bool) -> None:
        with self._lock:
            (self._connections.add if alive else self._connections.discard)(conn)

    def record(self, access: Access) -> None:
        with self._lock:
            self.log.append(access)

    def clear_log(self) -> None:
        with self._lock:
            self.log.clear()

    def downloaded(self, repo_id: str) -> dict[str, int]:
        """Body bytes sent per file of ``repo_id`` by GET /resolve requests."""
        sent: dict[str, int] = {}
        for a in list(self.log):
            m = _RESOLVE.match(a.path)
            if a.method == "GET" and m and m["repo"] == repo_id and a.bytes_sent:
                sent[m["path"]] = sent.get(m["path"], 0) + a.bytes_sent
        return sent

    def take_failure(self, repo_id: str, path: str, start: int, end: int) -> int | None:
        """The byte offset where this response must break, consuming one failure."""
        with self._lock:
            failure = self._failures.get((repo_id, path))
            if failure is None or failure.times <= 0 or not start <= failure.at_byte < end:
                return None
            failure.times -= 1
            return failure.at_byte


class _Handler(BaseHTTPRequestHandler):
    hub: HubStandIn
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle + delayed ACK add 40 ms each.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.hub.track(self.connection, alive=True)

    def finish(self) -> None:
        self.hub.track(self.connection, alive=False)
        super().finish()

    def log_message(self, format: str, *args: object) -> None:
        pass  # the access log is hub.log

    def do_HEAD(self) -> None:
        self._route(body=False)

    def do_GET(self) -> None:
        self._route(body=True)

    def _route(self, body: bool) -> None:
        self._sent, self._status = 0, 0
        url = urlsplit(self.path)
        path = unquote(url.path)
        try:
            if not self._auth_ok():
                self._error(401, None, INVALID_TOKEN_MESSAGE)
            elif (m := _API.match(url.path)) is not None:
                self._api(unquote(m["repo"]), m["kind"], unquote(m["rev"] or "main"), parse_qs(url.query), body)
            elif (m := _RESOLVE.match(url.path)) is not None:
                self._resolve(unquote(m["repo"]), unquote(m["rev"]), unquote(m["path"]), body)
            else:
                self._error(404, None, "Not found")
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            self.hub.record(Access(self.command, path, self._status, self._sent, self.headers.get("Range")))

    # -- endpoints -------------------------------------------------------------------------
    def _api(self, repo_id: str, kind: str | None, rev: str, query: dict[str, list[str]], body: bool) -> None:
        repo = self._repo(repo_id)
        if repo is None or (sha := self._commit(repo, rev)) is None:
            return
        if kind == "tree":
            payload: object = repo.tree()
        else:
            payload = repo.info(sha, blobs=query.get("blobs", ["false"])[0].lower() == "true")
        data = json.dumps(payload).encode()
        self._start(200, {"Content-Type": "application/json", "Content-Length": str(len(data))})
        if body:
            self._write(data)

    def _resolve(self, repo_id: str, rev: str, path: str, body: bool) -> None:
        repo = self._repo(repo_id)
        if repo is None or (sha := self._commit(repo, rev)) is None or not self._gate_ok(repo):
            return
        f = repo.files.get(path)
        if f is None:
            self._error(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": sha})
            return
        start, end = self._range(f.size)
        headers = {"X-Repo-Commit": sha, "Accept-Ranges": "bytes", "Content-Length": str(end - start),
                   "ETag": f'"{f.git_sha1}"', "Content-Type": "application/octet-stream"}
        if f.lfs:
            headers |= {"X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(f.size)}
        if (start, end) != (0, f.size):
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{f.size}"
        self._start(206 if "Content-Range" in headers else 200, headers)
        if body:
            self._send_body(repo_id, f, start, end)

    def _send_body(self, repo_id: str, f: FakeFile, start: int, end: int) -> None:
        cut = self.hub.take_failure(repo_id, f.path, start, end)
        stop = cut if cut is not None else end
        for offset in range(start, stop, SEND_CHUNK):
            self._write(f.data[offset:min(offset + SEND_CHUNK, stop)])
            if self.hub.chunk_delay_s:
                time.sleep(self.hub.chunk_delay_s)  # simulated slow link, not synchronisation
        if cut is not None:  # drop the connection mid-body, as a flaky network would
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True

    # -- helpers ---------------------------------------------------------------------------
    def _token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        return auth[len("Bearer "):] if auth.startswith("Bearer ") else None

    def _auth_ok(self) -> bool:
        token = self._token()
        return token is None or token in self.hub.tokens

    def _repo(self, repo_id: str) -> FakeRepo | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found")
        return repo

    def _commit(self, repo: FakeRepo, rev: str) -> str | None:
        sha = repo.revisions.get(rev) or (rev if rev in repo.revisions.values() else None)
        if sha is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return sha

    def _gate_ok(self, repo: FakeRepo) -> bool:
        token = self._token()
        if not repo.gated or token in repo.granted:
            return True
        status = 401 if token is None else 403
        self._error(status, "GatedRepo", f"Access to model {repo.repo_id} is restricted.")
        return False

    def _range(self, size: int) -> tuple[int, int]:
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if not m:
            return 0, size
        start = min(int(m[1]), size)
        return start, min(int(m[2]) + 1, size) if m[2] else size

    def _error(self, status: int, code: str | None, message: str, extra: dict[str, str] | None = None) -> None:
        data = json.dumps({"error": message}).encode()
        headers = {"X-Error-Message": message, "Content-Type": "application/json", "Content-Length": str(len(data))}
        if code:
            headers["X-Error-Code"] = code
        self._start(status, headers | (extra or {}))
        if self.command != "HEAD":
            self._write(data)

    def _start(self, status: int, headers: dict[str, str]) -> None:
        self._status = status
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def _write(self, data: bytes) -> None:
        self.wfile.write(data)
        self._sent += len(data)
