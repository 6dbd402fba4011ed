"""A reload of the gateway's routes (SIGHUP): read the configuration file the launcher wrote, start the
new models' upstreams, wait until their TEIs answer, then swap the route table in one step.

Requests already routed keep the upstreams they hold; replaced upstreams are closed ``retire_s`` later,
by which time the launcher has drained and stopped their TEIs. One line tells the launcher the switch
took effect (``switched_line``), or why it was refused (``refused_line``); the previous routes then stay.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

from embed_launcher.gateway.config import GatewayConfig, GatewayConfigError
from embed_launcher.gateway.handlers import Handlers
from embed_launcher.gateway.upstream import Upstream

CONFIG_FILE_VAR = "EMBED_GATEWAY_CONFIG_FILE"
READY_WAIT_S = 10.0  # the launcher saw the new TEIs ready: their first /health here is a formality
# What only a new gateway process can change: its sockets and its process count (and what aiohttp
# fixed when it built each listener).
FIXED = ("listen", "workers", "read_timeout_s", "write_timeout_s", "idle_timeout_s", "access_log")


def switched_line(generation: int) -> str:
    return f"Gateway routes: configuration {generation} in force"


def refused_line(generation: int, reason: str) -> str:
    return f"Gateway routes: configuration {generation} refused: {reason}"


def same_route_settings(a: GatewayConfig, b: GatewayConfig) -> bool:
    """What an Upstream was built with, besides its model: unchanged, it is kept as it is."""
    return (a.wait_s, a.upstream_timeout_s, a.balance) == (b.wait_s, b.upstream_timeout_s, b.balance)


class Reconfigure:
    """The route table's reloads in one gateway process."""

    def __init__(self, path: Path | None, handlers: Handlers, key_for: Callable[[str], str | None],
                 say: Callable[[str], None]) -> None:
        self.path, self.handlers, self.key_for, self.say = path, handlers, key_for, say
        self.busy = asyncio.Lock()
        self.retiring: set[asyncio.Task[None]] = set()
        self.replaced: list[Upstream] = []  # not closed yet

    def read(self) -> GatewayConfig | None:
        """The file's configuration, or None (and one line) when it is absent or unusable."""
        if self.path is None:
            return None
        try:
            return GatewayConfig.from_json(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, GatewayConfigError) as exc:
            self.say(f"Error: gateway configuration file {self.path}: {exc}; the routes in force stay")
            return None

    async def reload(self) -> None:
        """Apply the file when its generation is newer than the routes in force."""
        async with self.busy:
            config = self.read()
            current = self.handlers.config
            if config is None or config.generation <= current.generation:
                return
            fixed = [name for name in FIXED if getattr(config, name) != getattr(current, name)]
            if fixed:
                self.say(refused_line(config.generation, f"restart required ({', '.join(fixed)} changed)"))
                return
            try:
                await self.apply(config)
            except Exception as exc:  # e.g. EMBED_TOKEN_INPUT=decode without its encoding: the routes stay
                self.say(refused_line(config.generation, f"{type(exc).__name__}: {exc}"))

    async def apply(self, config: GatewayConfig) -> None:
        current, old = self.handlers.config, self.handlers.upstreams
        keep = same_route_settings(config, current)
        upstreams: dict[str, Upstream] = {}
        started: list[Upstream] = []
        for model in config.models:
            running = old.get(model.name)
            if keep and running is not None and running.model == model:
                upstreams[model.name] = running
                continue
            upstream = Upstream(model, self.key_for(model.kind), config.wait_s, config.upstream_timeout_s,
                                config.balance, self.handlers.metrics if config.metrics else None)
            await upstream.start()
            upstreams[model.name], started = upstream, [*started, upstream]
        waits = [r.ready.wait() for u in started for r in u.replicas]
        try:
            await asyncio.wait_for(asyncio.gather(*waits), READY_WAIT_S)
        except TimeoutError:
            for upstream in started:
                await upstream.close()
            self.say(refused_line(config.generation, f"its new TEIs did not answer /health within {READY_WAIT_S:g} s"))
            return
        try:
            self.handlers.swap(config, upstreams)
        except BaseException:
            for upstream in started:
                await upstream.close()
            raise
        self.say(switched_line(config.generation))
        kept = {id(u) for u in upstreams.values()}
        replaced = [u for u in old.values() if id(u) not in kept]
        if replaced:
            self.replaced += replaced
            task = asyncio.get_running_loop().create_task(self.retire(replaced, config.retire_s))
            self.retiring.add(task)
            task.add_done_callback(self.retiring.discard)

    async def retire(self, upstreams: list[Upstream], after_s: float) -> None:
        """Close the replaced upstreams once their TEIs had their drain."""
        await asyncio.sleep(after_s)
        for upstream in upstreams:
            await self.close_one(upstream)

    async def close_one(self, upstream: Upstream) -> None:
        self.handlers.retire(upstream)
        if upstream in self.replaced:
            self.replaced.remove(upstream)
        with contextlib.suppress(Exception):
            await upstream.close()

    async def close(self) -> None:
        """The gateway stops: the replaced upstreams not closed yet are closed now."""
        for task in list(self.retiring):
            task.cancel()
        for upstream in list(self.replaced):
            await self.close_one(upstream)
