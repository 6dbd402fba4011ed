"""One request handler per listener: check the key, resolve the route, answer every error in JSON."""

from __future__ import annotations

import hmac
import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from embed_launcher.gateway import connections, shapes
from embed_launcher.gateway.config import GatewayConfig
from embed_launcher.gateway.handlers import Handlers
from embed_launcher.gateway.openapi import OPENAPI_PATH, document
from embed_launcher.gateway.relay import send
from embed_launcher.gateway.routes import Target, resolve, speaks_openai
from embed_launcher.gateway.upstream import UpstreamFailed, UpstreamTimeout, UpstreamUnavailable


@dataclass(frozen=True)
class Keys:
    """The two API keys (None: that family of routes is open). The reranking routes take the reranker's."""

    embed: str | None = None
    rerank: str | None = None

    @classmethod
    def from_environ(cls, environ: dict[str, str]) -> Keys:
        return cls(environ.get("EMBED_GATEWAY_EMBED_KEY") or None, environ.get("EMBED_GATEWAY_RERANK_KEY") or None)

    def for_kind(self, kind: str) -> str | None:
        return self.rerank if kind == "rerank" else self.embed

    def accepted(self, key_kind: str | None) -> list[bytes] | None:
        """The exact `Authorization` values that pass (TEI's rule: `Bearer <key>`, byte for byte); None: open."""
        if key_kind is None:
            return None
        keys = (self.embed, self.rerank) if key_kind == "any" else (self.for_kind(key_kind),)
        return [f"Bearer {k}".encode() for k in keys if k] or None


def authorised(header: str | None, accepted: list[bytes]) -> bool:
    """Constant-time against every accepted value (no early exit that would tell which one came close)."""
    given = (header or "").encode("utf-8", "surrogateescape")
    matches = [hmac.compare_digest(given, expected) for expected in accepted]
    return header is not None and any(matches)


Dispatch = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def build_dispatch(config: GatewayConfig, handlers: Handlers, keys: Keys, routes: str) -> Dispatch:
    """The request handler for one listener; ``routes`` is `all` or `rerank`."""
    openapi_body = json.dumps(document(routes)).encode()  # public metadata, like TEI's /api-doc/openapi.json

    async def dispatch(request: web.BaseRequest) -> web.StreamResponse:
        connections.started(request)
        try:
            response = await answer(request)
            return await send(request, response, config.write_timeout_s)
        finally:
            connections.done(request)

    async def answer(request: web.BaseRequest) -> web.StreamResponse:
        raw_path = request.raw_path.split("?", 1)[0]
        if raw_path == OPENAPI_PATH:
            if request.method in ("GET", "HEAD"):
                return web.Response(body=openapi_body, content_type="application/json")
            refused = shapes.error_body(405, f"{request.method} is not allowed on {OPENAPI_PATH}", False)
            return web.Response(status=405, body=refused, content_type="application/json",
                                headers={"Allow": "GET, HEAD"})
        openai = speaks_openai(raw_path, routes)
        try:
            target = checked(request, raw_path)
            openai = target.route.openai
            if request.method not in target.route.methods:
                raise shapes.RequestError(405, f"{request.method} is not allowed on {raw_path}", "method_not_allowed",
                                          allow=target.route.allow)
            return await handlers.handle(request, target)
        except Unauthorised:
            return web.Response(status=401)
        except shapes.RequestError as err:
            return error(err.status, err.message, openai, err.code, err.allow)
        except web.HTTPRequestEntityTooLarge:
            return error(413, f"the request body is larger than the limit of {config.max_body_bytes} bytes", openai,
                         "payload_too_large")
        except UpstreamUnavailable as exc:
            return error(503, str(exc), openai, "model_unavailable")
        except UpstreamFailed as exc:
            return error(502, str(exc), openai, "upstream_failed")
        except UpstreamTimeout as exc:
            return error(504, str(exc), openai, "upstream_timeout")
        except (ConnectionResetError, web.HTTPException):
            raise
        except Exception as exc:  # never a traceback to a client; one line for the operator
            print(f"Error: {request.method} {raw_path}: unexpected {type(exc).__name__}: {exc}", flush=True,
                  file=sys.stdout)
            return error(500, f"internal gateway error ({type(exc).__name__})", openai, "internal_error")

    def checked(request: web.BaseRequest, raw_path: str) -> Target:
        """The request's target, once its key passed: the key is checked before anything about the
        models is said (an unknown model's 404 lists the names; a caller without a key learns nothing)."""
        try:
            target = resolve(raw_path, routes, config)
        except shapes.RequestError:
            require(request, keys.accepted("any"))
            raise
        require(request, keys.accepted(target.key_kind(config)))
        return target

    return dispatch


class Unauthorised(Exception):
    """No key, or not the right one: 401 with an empty body, as TEI answers."""


def require(request: web.BaseRequest, accepted: list[bytes] | None) -> None:
    if accepted is not None and not authorised(request.headers.get("Authorization"), accepted):
        raise Unauthorised


def error(status: int, message: str, openai: bool, code: str | None = None, allow: str | None = None) -> web.Response:
    headers = {"Allow": allow} if allow else None
    return web.Response(status=status, body=shapes.error_body(status, message, openai, code),
                        content_type="application/json", headers=headers)
