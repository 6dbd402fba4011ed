"""One TEI child seen from the gateway: a keep-alive pool, its readiness, and when a request is sent again."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDictProxy

from embed_launcher.gateway.config import ModelRoute

BUFFER_BYTES = 256 * 1024  # answers up to this size are read whole (and can be retried); larger ones stream
FIRST_POLL_S, MAX_POLL_S = 0.02, 0.5
PROBE_TIMEOUT_S = 2.0
CONNECT_TIMEOUT_S = 2.0


class UpstreamUnavailable(Exception):
    """The model's TEI did not become ready within the wait."""

    def __init__(self, model: ModelRoute, wait_s: float) -> None:
        super().__init__(f"model `{model.name}` is not available: its server did not become ready within "
                         f"{wait_s:g} s")


class UpstreamFailed(Exception):
    """The model's TEI dropped the request twice (once is forgiven: it was replaced)."""

    def __init__(self, model: ModelRoute, reason: str) -> None:
        super().__init__(f"model `{model.name}`: the server dropped the request again after a restart ({reason})")


@dataclass
class Reply:
    """TEI's answer: read whole (``body``) or still streaming (``response``, the caller releases it)."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes | None = None
    response: aiohttp.ClientResponse | None = None


class Upstream:
    """Talks to one TEI: waits while it restarts, sends a dropped request once more, adds the key itself.

    Readiness is one shared poll of TEI's public `/health` (20 ms doubling to 0.5 s), started when a
    connection is refused or dropped; every waiting request awaits the same event, so a restart costs
    one poll loop however many requests wait.
    """

    def __init__(self, model: ModelRoute, key: str | None, wait_s: float) -> None:
        self.model, self.wait_s = model, wait_s
        self.base = model.upstream.rstrip("/")
        self.headers = {"Content-Type": "application/json"}
        if key:
            self.headers["Authorization"] = f"Bearer {key}"
        self.ready = asyncio.Event()
        self.seen_ready = False
        self._poller: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._probe: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30.0, enable_cleanup_closed=False)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S)
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False,
                                              skip_auto_headers=("User-Agent", "Accept-Encoding"))
        # Probes never reuse a pooled connection: a stale one would read as "down".
        self._probe = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True),
            timeout=aiohttp.ClientTimeout(sock_connect=PROBE_TIMEOUT_S, sock_read=PROBE_TIMEOUT_S),
        )
        self.mark_down()

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
        for session in (self._session, self._probe):
            if session is not None:
                await session.close()

    def mark_down(self) -> None:
        """Requests wait from now on until `/health` answers 200 again."""
        self.ready.clear()
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        delay = FIRST_POLL_S
        while not await self.healthy():
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_POLL_S)
        self.seen_ready = True
        self.ready.set()

    async def healthy(self) -> bool:
        """Whether TEI takes requests: /health answers 200, or TEI accepted the connection and its /health
        waits behind a batch (busy is not dead: TEI binds its port only once the model is loaded)."""
        assert self._probe is not None
        try:
            async with self._probe.get(self.base + "/health") as response:
                return response.status == 200
        except aiohttp.SocketTimeoutError:
            return True
        except (TimeoutError, aiohttp.ClientError, OSError):
            return False

    async def _wait_ready(self, deadline: float) -> None:
        if self.ready.is_set():
            return
        try:
            await asyncio.wait_for(self.ready.wait(), max(deadline - asyncio.get_running_loop().time(), 0.0))
        except TimeoutError:
            raise UpstreamUnavailable(self.model, self.wait_s) from None

    async def send(self, method: str, path: str, body: bytes | None = None, *, whole: bool = False) -> Reply:
        """Send once TEI is ready; resend once if it drops the request; ``whole`` reads the answer entirely.

        A refused connection means "restarting": wait (up to ``wait_s`` in all) and send. A request
        dropped before its answer was read (reset, disconnected, cut short) is sent once more after
        the replacement is ready, with a fresh wait: embedding and reranking are idempotent.
        """
        loop = asyncio.get_running_loop()
        deadline, resent = loop.time() + self.wait_s, False
        while True:
            await self._wait_ready(deadline)
            try:
                return await self._attempt(method, path, body, whole)
            except (TimeoutError, aiohttp.ClientConnectorError):
                self.mark_down()  # nobody listening: the TEI is (re)starting
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, aiohttp.ClientPayloadError) as exc:
                if resent:
                    raise UpstreamFailed(self.model, type(exc).__name__) from None
                resent, deadline = True, loop.time() + self.wait_s
                self.mark_down()

    async def _attempt(self, method: str, path: str, body: bytes | None, whole: bool) -> Reply:
        assert self._session is not None
        response = await self._session.request(method, self.base + path, data=body, headers=self.headers)
        try:
            length = response.content_length
            if whole or (length is not None and length <= BUFFER_BYTES):
                data = await response.read()
                response.release()
                return Reply(response.status, response.headers, body=data)
        except BaseException:
            response.close()
            raise
        return Reply(response.status, response.headers, response=response)
