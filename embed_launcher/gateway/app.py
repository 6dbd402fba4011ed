"""One aiohttp application per listener: resolve the route, check the key, answer every error in JSON."""

from __future__ import annotations

import hmac
import json
import sys
from dataclasses import dataclass

from aiohttp import web

from embed_launcher.gateway import shapes
from embed_launcher.gateway.config import GatewayConfig
from embed_launcher.gateway.handlers import Handlers
from embed_launcher.gateway.openapi import OPENAPI_PATH, document
from embed_launcher.gateway.routes import resolve
from embed_launcher.gateway.upstream import UpstreamFailed, UpstreamUnavailable


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


def build_app(config: GatewayConfig, handlers: Handlers, keys: Keys, routes: str) -> web.Application:
    """The application for one listener; ``routes`` is `all` or `rerank`."""

    openapi_body = json.dumps(document(routes)).encode()  # public metadata, like TEI's /api-doc/openapi.json

    async def dispatch(request: web.Request) -> web.StreamResponse:
        raw_path = request.raw_path.split("?", 1)[0]
        if raw_path == OPENAPI_PATH:
            if request.method in ("GET", "HEAD"):
                return web.Response(body=openapi_body, content_type="application/json")
            refused = shapes.error_body(405, f"{request.method} is not allowed on {OPENAPI_PATH}", False)
            return web.Response(status=405, body=refused, content_type="application/json",
                                headers={"Allow": "GET, HEAD"})
        openai = raw_path.startswith(("/v1/", "/v2/")) or raw_path == "/embeddings"
        try:
            target = resolve(raw_path, routes, config)
            openai = target.route.openai
            accepted = keys.accepted(target.key_kind(config))
            if accepted is not None and not authorised(request.headers.get("Authorization"), accepted):
                return web.Response(status=401)
            if request.method not in target.route.methods:
                raise shapes.RequestError(405, f"{request.method} is not allowed on {raw_path}", "method_not_allowed")
            return await handlers.handle(request, target)
        except shapes.RequestError as err:
            return error(err.status, err.message, openai, err.code)
        except web.HTTPRequestEntityTooLarge:
            return error(413, f"the request body is larger than the limit of {config.max_body_bytes} bytes", openai,
                         "payload_too_large")
        except UpstreamUnavailable as exc:
            return error(503, str(exc), openai, "model_unavailable")
        except UpstreamFailed as exc:
            return error(502, str(exc), openai, "upstream_failed")
        except (ConnectionResetError, web.HTTPException):
            raise
        except Exception as exc:  # never a traceback to a client; one line for the operator
            print(f"Error: {request.method} {raw_path}: unexpected {type(exc).__name__}: {exc}", flush=True,
                  file=sys.stdout)
            return error(500, f"internal gateway error ({type(exc).__name__})", openai, "internal_error")

    app = web.Application(client_max_size=config.max_body_bytes)
    # [\s\S], not `.`: a percent-encoded line break in the path must reach dispatch, not aiohttp's text 404
    app.router.add_route("*", r"/{tail:[\s\S]*}", dispatch)
    return app


def error(status: int, message: str, openai: bool, code: str | None = None) -> web.Response:
    headers = {"Allow": "GET, HEAD, POST"} if status == 405 else None
    return web.Response(status=status, body=shapes.error_body(status, message, openai, code),
                        content_type="application/json", headers=headers)
