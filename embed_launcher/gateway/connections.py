"""Client connections with deadlines: a request's headers and body must arrive in time (aiohttp has none)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler


class DeadlineHandler(RequestHandler):
    """aiohttp's connection handler plus a read deadline.

    aiohttp closes a connection idle for ``keepalive_timeout``, counted from its opening or its last
    answer, whatever arrives meanwhile; a client trickling a request line or a body holds the
    connection for as long as it likes. Here, from a request's first byte, its headers and body must
    arrive within ``read_timeout_s``, or the connection is closed. The handler tells us when the body
    is read (``body_read``) and when the answer is done (``request_done``).
    """

    def __init__(self, manager: web.Server, *, read_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.read_timeout_s = read_timeout_s
        self.deadline: asyncio.TimerHandle | None = None
        self.in_request = False

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.deadline is None and not self.in_request:
            self.deadline = asyncio.get_running_loop().call_later(self.read_timeout_s, self.read_timed_out)

    def request_started(self) -> None:
        self.in_request = True

    def body_read(self) -> None:
        self.disarm()

    def request_done(self) -> None:
        self.in_request = False
        self.disarm()

    def disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def read_timed_out(self) -> None:
        self.deadline = None
        self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.disarm()
        super().connection_lost(exc)


class GatewayServer(web.Server):
    """aiohttp's low-level server, making DeadlineHandlers."""

    def __init__(self, handler: Any, *, read_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.read_timeout_s = read_timeout_s
        own = ("request_factory", "handler_cancellation", "loop")
        self.handler_args = {k: v for k, v in kwargs.items() if k not in own}

    def __call__(self) -> RequestHandler:
        return DeadlineHandler(self, loop=asyncio.get_running_loop(), read_timeout_s=self.read_timeout_s,
                               **self.handler_args)


def started(request: web.BaseRequest) -> None:
    if isinstance(request.protocol, DeadlineHandler):
        request.protocol.request_started()


def body_read(request: web.BaseRequest) -> None:
    if isinstance(request.protocol, DeadlineHandler):
        request.protocol.body_read()


def done(request: web.BaseRequest) -> None:
    if isinstance(request.protocol, DeadlineHandler):
        request.protocol.request_done()
