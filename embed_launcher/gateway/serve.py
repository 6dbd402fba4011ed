"""One gateway process: listen on every configured socket, serve until SIGTERM, then drain."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

import uvloop
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from embed_launcher.gateway import logs
from embed_launcher.gateway.app import KEY_ID, REQUEST_LOG, GuardedHandlers, Keys, build_dispatch
from embed_launcher.gateway.config import DEFAULT_DRAIN_S, GatewayConfig
from embed_launcher.gateway.connections import GatewayServer
from embed_launcher.gateway.handlers import Handlers
from embed_launcher.gateway.keystore import KeyStore
from embed_launcher.gateway.metrics import Metrics
from embed_launcher.gateway.reconfigure import CONFIG_FILE_VAR, Reconfigure
from embed_launcher.gateway.upstream import Upstream
from embed_launcher.reporting.errors import LauncherError

DRAIN_S = DEFAULT_DRAIN_S  # the longest drain; config.drain_s (fitted inside EMBED_STOP_TIMEOUT) is the one used


class AccessLog(AbstractAccessLogger):
    """One line per request: client, request line, status, bytes, seconds, the id of the key that
    passed (`-` for none; never the key itself) and the request's id (logs.access_line)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        version = f"{request.version.major}.{request.version.minor}"
        self.logger.info("%s", logs.access_line(request.remote or "-", request.method, request.path_qs, version,
                                                response.status, response.body_length, time,
                                                request.get(KEY_ID), request.get(REQUEST_LOG)))


class ListenError(LauncherError):
    """A configured socket could not be bound."""


def say(line: str) -> None:
    logs.say(line)


async def serve(config: GatewayConfig, keys: Keys, *, reuse_port: bool, ready: Callable[[], None],
                stop: asyncio.Event | None = None, store: KeyStore | None = None,
                config_file: Path | None = None) -> None:
    """Listen, call ``ready``, serve until ``stop`` (SIGTERM or SIGINT by default), drain, close.

    ``store``: the keys clients may present (default: the implicit key only); its file is watched,
    and SIGHUP re-reads it at once. ``config_file``: where the launcher writes a reload's configuration;
    SIGHUP applies it when its generation is newer (gateway/reconfigure.py).
    """
    stop = stop or _stop_on_signals()
    store = store or KeyStore(keys.embed, keys.rerank, None, workers=config.workers, say=say)
    metrics = Metrics(config, counting=config.metrics)
    upstreams = {m.name: Upstream(m, keys.for_kind(m.kind), config.wait_s, config.upstream_timeout_s,
                                  config.balance, metrics if config.metrics else None) for m in config.models}
    for upstream in upstreams.values():
        await upstream.start()
    handlers = GuardedHandlers(config, upstreams, metrics)
    routes = Reconfigure(config_file, handlers, keys.for_kind, say)
    reloads: set[asyncio.Task[None]] = set()

    def on_sighup() -> None:
        """Re-read the keys file, and the routes when the launcher wrote a newer configuration."""
        store.poll(force=True)
        task = asyncio.get_running_loop().create_task(routes.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    with contextlib.suppress(ValueError, RuntimeError):  # not the main thread (an in-process test): no SIGHUP
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, on_sighup)
    watcher = asyncio.create_task(store.watch(stop))
    runners: list[web.ServerRunner] = []
    try:
        for listener in config.listen:
            runner = web.ServerRunner(listener_server(config, handlers, store, listener.routes), handle_signals=False,
                                      shutdown_timeout=config.drain_s)
            await runner.setup()
            runners.append(runner)
            try:
                await web.TCPSite(runner, listener.host, listener.port, reuse_port=reuse_port or None,
                                  backlog=1024).start()
            except OSError as exc:
                raise ListenError(f"Error: cannot listen on {listener.address}: {exc.strerror or exc}") from None
        settle_heap()
        ready()
        await stop.wait()
    finally:
        watcher.cancel()
        with contextlib.suppress(Exception):  # best-effort: the last uses since the previous write
            store.uses.flush(time.monotonic(), force=True)
        await asyncio.gather(*(r.cleanup() for r in runners))
        await handlers.scraper.close()
        for task in list(reloads):
            task.cancel()
        await routes.close()
        for upstream in handlers.upstreams.values():
            await upstream.close()


def settle_heap() -> None:
    """Move what start-up made (aiohttp, prometheus_client, the routes: ~40,000 objects) out of the cyclic
    collector's reach (gc.freeze), once, before serving. Each /metrics answer makes thousands of TEI samples
    that live until it is written, long enough to reach the oldest generation, so a full collection runs every
    dozen answers; without this, each walked the whole start-up heap, about 27 ms, which was /metrics' p99
    (benchmarks/metrics_bench.py). Frozen objects are still freed by reference counting; only cycles among
    them (none expected: they live as long as the process) would stay."""
    gc.collect()  # garbage from start-up is freed, not frozen
    gc.freeze()


def listener_server(config: GatewayConfig, handlers: Handlers, keys: KeyStore, routes: str) -> GatewayServer:
    """aiohttp's server for one listener, with the gateway's limits on slow and idle clients."""

    def request_factory(message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> web.BaseRequest:
        return web.BaseRequest(message, payload, protocol, writer, task, asyncio.get_running_loop(),
                               client_max_size=handlers.config.max_body_bytes)

    return GatewayServer(build_dispatch(config, handlers, keys, routes), read_timeout_s=config.read_timeout_s,
                         request_factory=request_factory, handler_cancellation=True,
                         keepalive_timeout=config.idle_timeout_s,
                         access_log=_access_logger() if config.access_log else None,
                         access_log_class=AccessLog)


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _access_logger() -> logging.Logger:
    logger = logging.getLogger("embed_launcher.gateway.access")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def ready_line(config: GatewayConfig) -> str:
    line = "Gateway ready on " + ", ".join(listener.address for listener in config.listen)
    if all(listener.routes == "metrics" for listener in config.listen):
        line += " (/metrics only: with EMBED_GATEWAY=false TEI itself is on the public ports)"
    return line


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop: libuv's loop roughly doubles what one worker forwards (see benchmarks/gateway_bench.py)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def config_file(environ: Mapping[str, str]) -> Path | None:
    """Where a reload's configuration is written (EMBED_GATEWAY_CONFIG_FILE), if anywhere."""
    path = environ.get(CONFIG_FILE_VAR)
    return Path(path) if path else None


def run_single(config: GatewayConfig, keys: Keys, store: KeyStore, path: Path | None = None) -> int:
    """workers = 1: this process serves."""
    run(serve(config, keys, reuse_port=False, ready=lambda: say(ready_line(config)), store=store, config_file=path))
    return 0


def run_worker(config: GatewayConfig, keys: Keys, store: KeyStore, ready_fd: int, path: Path | None = None) -> int:
    """One of several workers: tell the parent through ``ready_fd`` once listening."""

    def ready() -> None:
        os.write(ready_fd, b"1")
        os.close(ready_fd)

    run(serve(config, keys, reuse_port=True, ready=ready, store=store, config_file=path))
    return 0
