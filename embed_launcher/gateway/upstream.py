"""A model's TEI children seen from the gateway: each replica's keep-alive pool and readiness, which
replica takes a request (EMBED_GATEWAY_BALANCE), and when a request is sent again."""

from __future__ import annotations

import asyncio
import itertools
import weakref
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.client_reqrep import ClientRequest
from aiohttp.connector import Connection
from aiohttp.tracing import Trace
from multidict import CIMultiDictProxy

from embed_launcher.gateway import logs
from embed_launcher.gateway.config import BALANCES, ModelRoute
from embed_launcher.gateway.metrics import Metrics

BUFFER_BYTES = 256 * 1024  # answers up to this size are read whole (and can be retried); larger ones stream
FIRST_POLL_S, MAX_POLL_S = 0.02, 0.5
PROBE_TIMEOUT_S = 2.0
CONNECT_TIMEOUT_S = 2.0
# TEI's answers when its backend is broken: 424 (inference failed), 503 (unhealthy). With siblings, the
# replica gets no new work until its /health says 200 again (a one-off 424 costs one quick probe).
UNHEALTHY_STATUSES = (424, 503)


class UpstreamUnavailable(Exception):
    """No TEI of the model became ready within the wait."""

    def __init__(self, model: ModelRoute, wait_s: float) -> None:
        many = len(model.upstreams)
        servers = "its server did not" if many == 1 else f"none of its {many} servers did"
        super().__init__(f"model `{model.name}` is not available: {servers} become ready within {wait_s:g} s")


class UpstreamFailed(Exception):
    """The model's TEI dropped a request it had received: it is not sent again (it may be what crashed TEI)."""

    def __init__(self, model: ModelRoute, reason: str) -> None:
        super().__init__(f"model `{model.name}`: the server closed the connection before answering ({reason}); "
                         "the request was not sent again")


class UpstreamTimeout(Exception):
    """The model's TEI did not answer within EMBED_GATEWAY_UPSTREAM_TIMEOUT."""

    def __init__(self, model: ModelRoute, timeout_s: float) -> None:
        super().__init__(f"model `{model.name}` did not answer within {timeout_s:g} s "
                         "(EMBED_GATEWAY_UPSTREAM_TIMEOUT)")


class Attempt:
    """One attempt to send: whether it went out on a pooled connection (set by ``PoolConnector``)."""

    def __init__(self) -> None:
        self.reused = False


ATTEMPT: ContextVar[Attempt | None] = ContextVar("attempt", default=None)


class PoolConnector(aiohttp.TCPConnector):
    """aiohttp's pool, telling the current attempt whether its connection had carried a request before
    (aiohttp's trace hooks say the same, but cost a third of the gateway's throughput)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.used: weakref.WeakSet[object] = weakref.WeakSet()

    async def connect(self, req: ClientRequest, traces: list[Trace], timeout: aiohttp.ClientTimeout) -> Connection:
        connection = await super().connect(req, traces, timeout)
        attempt, protocol = ATTEMPT.get(), connection.protocol
        if attempt is not None and protocol is not None:
            attempt.reused = protocol in self.used
            self.used.add(protocol)
        return connection


@dataclass
class Reply:
    """TEI's answer: read whole (``body``) or still streaming (``response``, the caller releases it)."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes | None = None
    response: aiohttp.ClientResponse | None = None


class Replica:
    """One TEI of a model: its keep-alive pool, its readiness, and the inputs it has in flight.

    Readiness is one shared poll of TEI's public `/health` (20 ms doubling to 0.5 s), started when a
    connection is refused; every waiting request awaits the same event, so a restart costs one poll
    loop however many requests wait.
    """

    def __init__(self, model: ModelRoute, base: str, headers: dict[str, str], timeout_s: float,
                 number: int = 0) -> None:
        self.model, self.base, self.headers, self.timeout_s = model, base.rstrip("/"), headers, timeout_s
        self.number = number
        self.ready = asyncio.Event()
        self.seen_ready = False
        self.inputs = 0  # inputs in flight: what least-inputs balances
        self._poller: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._probe: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = PoolConnector(limit=0, keepalive_timeout=30.0, enable_cleanup_closed=False)
        timeout = aiohttp.ClientTimeout(total=self.timeout_s, sock_connect=CONNECT_TIMEOUT_S)
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
        """No new work from now on until `/health` answers 200 again."""
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
        """Whether a TEI that was down (or never ready) takes requests again: its /health answered 200.

        A /health that stays silent is not enough: it may be a busy TEI (its /health waits behind the
        batch in progress) or a hung one, and from outside nothing tells the two apart (/metrics may
        answer from a hung process too). So a silent /health never makes a replica ready; the poll goes
        on, and a busy TEI is ready as soon as its batch ends and /health answers. A replica that is
        ready is never probed: only a refused connection marks it down, so a TEI busy under load stays
        routable (its requests queue in TEI, as they would without the gateway). A hung TEI is killed by
        the supervisor (EMBED_HANG_TIMEOUT); its refused connections then mark it down here.
        """
        assert self._probe is not None
        try:
            async with self._probe.get(self.base + "/health") as response:
                return response.status == 200
        except (TimeoutError, aiohttp.ClientError, OSError):
            return False

    async def attempt(self, method: str, path: str, body: bytes | None, whole: bool, attempt: Attempt) -> Reply:
        assert self._session is not None
        ATTEMPT.set(attempt)
        log = logs.CURRENT.get()
        headers = self.headers if log is None else {**self.headers, **log.upstream_headers()}
        response = await self._session.request(method, self.base + path, data=body, headers=headers)
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


class Upstream:
    """One model's replicas: picks one per request, waits while all restart, sends a request again only
    when no TEI received it, and adds the key itself.

    ``balance`` (EMBED_GATEWAY_BALANCE): ``least-inputs`` picks the ready replica with the fewest inputs
    in flight (a batch of 512 weighs 512), ties in turn; ``round-robin`` takes the ready ones in turn.
    Busy replicas still get work, their load counting against them; replicas that are starting or
    restarting (refused a connection, /health not yet 200) get none.
    """

    def __init__(self, model: ModelRoute, key: str | None, wait_s: float, timeout_s: float = 600.0,
                 balance: str = BALANCES[0], metrics: Metrics | None = None) -> None:
        self.model, self.wait_s, self.timeout_s, self.balance = model, wait_s, timeout_s, balance
        self.metrics = metrics
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self.replicas = tuple(Replica(model, url, headers, timeout_s, i) for i, url in enumerate(model.upstreams))
        self._turn = itertools.count()
        self._any_ready = asyncio.Event()

    @property
    def seen_ready(self) -> bool:
        """Some replica was ready once (the gateway's /health waits for every model's first)."""
        return any(r.seen_ready for r in self.replicas)

    async def start(self) -> None:
        for replica in self.replicas:
            await replica.start()

    async def close(self) -> None:
        for replica in self.replicas:
            await replica.close()

    def ready_now(self) -> bool:
        """Some replica takes requests now (asking moves no turn, unlike `pick`)."""
        return any(r.ready.is_set() for r in self.replicas)

    def pick(self, avoid: Replica | None = None) -> Replica | None:
        """The replica for the next request (never ``avoid``), or None while none is ready."""
        if len(self.replicas) == 1:
            only = self.replicas[0]
            return only if only.ready.is_set() and only is not avoid else None
        ready = [r for r in self.replicas if r.ready.is_set() and r is not avoid]
        if not ready:
            return None
        start = next(self._turn) % len(self.replicas)
        ordered = sorted(ready, key=lambda r: (r.number - start) % len(self.replicas))  # in turn from `start`
        if self.balance == "round-robin":
            return ordered[0]
        return min(ordered, key=lambda r: r.inputs)  # min keeps the first of equals: ties go in turn

    async def _choose(self, deadline: float) -> Replica:
        loop, waited = asyncio.get_running_loop(), False
        while True:
            replica = self.pick()
            if replica is not None:
                return replica
            if self.metrics is not None and not waited:
                waited = True
                self.metrics.waited(self.model.name)
            waits = [loop.create_task(r.ready.wait()) for r in self.replicas]
            try:
                done, _ = await asyncio.wait(waits, timeout=max(deadline - loop.time(), 0.0),
                                             return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in waits:
                    task.cancel()
            if not done:
                raise UpstreamUnavailable(self.model, self.wait_s)

    async def send(self, method: str, path: str, body: bytes | None = None, *, whole: bool = False,
                   inputs: int | None = None) -> Reply:
        """Send to a ready replica; send again only what no TEI provably processed.

        - No connection (refused, connect timeout): that TEI is (re)starting. It is marked down and gets
          no new work; the request goes to another ready replica, or waits (up to ``wait_s`` in all) for
          the first to answer /health. Nothing was sent.
        - Closed before any answer on a pooled keep-alive connection: the server may have closed it
          while idle just as the request went out (the idle-close race; aiohttp retries only GET and
          HEAD itself). Sent again once, on a new connection, with no wait: the TEI is not down.
        - Closed before the answer on a new connection, or a second time: a TEI received the request and
          died or dropped it. With a single TEI it is not sent again (it may be what crashed the TEI, and
          would crash the replacement): UpstreamFailed, a 502. With replicas it goes once to a ready
          sibling, at once (a replica killed under load costs no request); if that one drops it too, it
          is a poison request and stops there: a 502, and at most two replicas met it. The replica is not
          marked down for everyone: if its TEI is gone, the next request's refused connection says so.
        - No answer within ``timeout_s`` (EMBED_GATEWAY_UPSTREAM_TIMEOUT): UpstreamTimeout, a 504.
        - TEI's own error for a broken backend (424, 503): relayed as it is (TEI processed the request),
          and with siblings the replica gets no new work until its /health answers 200.

        ``inputs`` (the texts or documents the body holds; None: not a client's inputs, weighs 1) is what
        the request weighs for least-inputs, and what the access log counts.
        """
        loop = asyncio.get_running_loop()
        weight, log = inputs or 1, logs.CURRENT.get()
        deadline, resent, tries = loop.time() + self.wait_s, False, 0
        metrics = self.metrics
        dropped_by: Replica | None = None  # the replica that died under this request, once
        failure = ""
        while True:
            if dropped_by is None:
                replica = await self._choose(deadline)
            else:
                sibling = self.pick(avoid=dropped_by)
                if sibling is None:  # no sibling ready now: waiting could hand it to the replacement
                    raise UpstreamFailed(self.model, failure)
                replica = sibling
            attempt = Attempt()
            replica.inputs += weight
            reached = True  # this attempt is the request's (the access log's replica, inputs): not when refused
            if metrics is not None:
                tries += 1
                if tries > 1:
                    metrics.retried(self.model.name)
                metrics.in_flight(self.model.name, replica.number, weight)
            try:
                reply = await replica.attempt(method, path, body, whole, attempt)
                if reply.status in UNHEALTHY_STATUSES and len(self.replicas) > 1:
                    replica.mark_down()  # its siblings take new work until its /health answers 200 again
                return reply
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError):
                reached = False
                replica.mark_down()  # nobody listening: this TEI is (re)starting
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, aiohttp.ClientPayloadError) as exc:
                if attempt.reused and not resent:
                    resent, reached = True, False  # the idle-close race: never processed, sent again below
                    continue
                if dropped_by is not None or len(self.replicas) == 1:
                    raise UpstreamFailed(self.model, type(exc).__name__) from None
                dropped_by, failure, reached = replica, type(exc).__name__, False  # the sibling's attempt counts
            except TimeoutError:
                raise UpstreamTimeout(self.model, self.timeout_s) from None
            finally:
                replica.inputs -= weight
                if metrics is not None:
                    metrics.in_flight(self.model.name, replica.number, -weight)
                if log is not None and reached:
                    log.answered_by(replica.number, inputs)
