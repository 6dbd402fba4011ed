"""One request handler per listener: check the key (401/403/429), resolve the route, answer every error in JSON."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from embed_launcher.gateway import connections, logs, shapes
from embed_launcher.gateway.access import Grant, Need, model_refusal
from embed_launcher.gateway.config import GatewayConfig, ModelRoute
from embed_launcher.gateway.handlers import Handlers
from embed_launcher.gateway.keystore import KeyStore
from embed_launcher.gateway.metrics import NO_MODEL, REQUEST_MODEL, UNMATCHED
from embed_launcher.gateway.openapi import OPENAPI_PATH, document
from embed_launcher.gateway.relay import send
from embed_launcher.gateway.requestid import HEADER
from embed_launcher.gateway.routes import Action, Target, resolve, speaks_openai
from embed_launcher.gateway.upstream import UpstreamFailed, UpstreamTimeout, UpstreamUnavailable


@dataclass(frozen=True)
class Keys:
    """The implicit key ``default`` per kind (None: not set). The gateway sends it to the TEIs behind it;
    what clients may present is the KeyStore's business (this key plus the keys file's)."""

    embed: str | None = None
    rerank: str | None = None

    @classmethod
    def from_environ(cls, environ: dict[str, str]) -> Keys:
        return cls(environ.get("EMBED_GATEWAY_EMBED_KEY") or None, environ.get("EMBED_GATEWAY_RERANK_KEY") or None)

    def for_kind(self, kind: str) -> str | None:
        return self.rerank if kind == "rerank" else self.embed


# The key that passed for the request being handled: each request sets it before its handler runs,
# and GuardedHandlers reads it once the model is known (from the path, the body or the default).
GRANT: ContextVar[Grant | None] = ContextVar("grant", default=None)
# The route table's path a request resolved to (its `route` label in embed_requests_total).
ROUTE: ContextVar[str] = ContextVar("route", default=UNMATCHED)
KEY_ID = web.RequestKey("key_id", str)  # the id of the key that passed, for the access log
REQUEST_LOG = web.RequestKey("request_log", logs.RequestLog)  # the request's id and facts, for the access log


class GuardedHandlers(Handlers):
    """The route handlers, refusing a model outside the key's models with 403 where the model is chosen.

    A key limited to some models sees only those: in `/v1/models`, and in the names a 404 lists.
    """

    def visible(self, models: Sequence[ModelRoute]) -> list[ModelRoute]:
        grant = GRANT.get()
        return [m for m in models if grant is None or grant.allows(m.names)]

    def model(self, target: Target, asked: Any = None) -> ModelRoute:
        model = super().model(target, asked)
        refusal = model_refusal(GRANT.get(), model.names, asked or target.asked)
        if refusal is not None:
            raise Forbidden(refusal)
        return model


def hidden_names(err: shapes.RequestError, grant: Grant | None, config: GatewayConfig) -> shapes.RequestError:
    """A 404 of the route table names every model; a key limited to some gets one naming only those."""
    if grant is None or grant.models is None or err.status != 404:
        return err
    names = ", ".join(n for m in config.models if grant.allows(m.names) for n in m.names) or "none"
    return shapes.RequestError(404, f"no such route or model here; the models this key may use: {names}", err.code)


Dispatch = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
METRICS_PATH = "/metrics"


def build_dispatch(config: GatewayConfig, handlers: Handlers, keys: KeyStore, routes: str) -> Dispatch:
    """The request handler for one listener; ``routes`` is `all`, `rerank` or `metrics`."""
    openapi_body = json.dumps(document(routes)).encode()  # public metadata, like TEI's /api-doc/openapi.json

    async def dispatch(request: web.BaseRequest) -> web.StreamResponse:
        connections.started(request)
        began = time.perf_counter()
        ROUTE.set(UNMATCHED)
        REQUEST_MODEL.set(NO_MODEL)
        log = logs.RequestLog.of(request.headers)
        logs.CURRENT.set(log)  # this request's task (and the tasks it starts) see it
        request[REQUEST_LOG] = log
        try:
            response = await answer(request)
            if not response.prepared:  # a streamed answer got it from relay before its head went out
                response.headers[HEADER] = log.id
            route = ROUTE.get()
            if route != METRICS_PATH:  # a scrape counts nothing: every worker's answer stays the same
                handlers.metrics.request_done(REQUEST_MODEL.get(), route, response.status, time.perf_counter() - began)
            return await send(request, response, handlers.config.write_timeout_s)
        finally:
            connections.done(request)

    async def answer(request: web.BaseRequest) -> web.StreamResponse:
        config = handlers.config  # the routes in force now (a reload swaps them)
        raw_path = request.raw_path.split("?", 1)[0]
        if raw_path == OPENAPI_PATH:
            ROUTE.set(OPENAPI_PATH)
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
        except Forbidden as exc:
            say_refusal(request, exc)
            return error(403, str(exc), openai, "forbidden")
        except RateLimited as exc:
            return error(429, str(exc), openai, "rate_limit_exceeded", retry_after=exc.retry_after_s)
        except shapes.RequestError as err:
            return error(err.status, err.message, openai, err.code, err.allow)
        except web.HTTPRequestEntityTooLarge:
            return error(413, f"the request body is larger than the limit of {config.max_body_bytes} bytes", openai,
                         "payload_too_large")
        except UpstreamUnavailable as exc:
            return error(503, str(exc), openai, "model_unavailable")
        except UpstreamFailed as exc:
            say_upstream_failure(request, raw_path, exc)
            return error(502, str(exc), openai, "upstream_failed")
        except UpstreamTimeout as exc:
            say_upstream_failure(request, raw_path, exc)
            return error(504, str(exc), openai, "upstream_timeout")
        except (ConnectionResetError, web.HTTPException):
            raise
        except Exception as exc:  # never a traceback to a client; one line for the operator
            logs.say_about_request(f"Error: {request.method} {raw_path}: unexpected {type(exc).__name__}: {exc}")
            return error(500, f"internal gateway error ({type(exc).__name__})", openai, "internal_error")

    def checked(request: web.BaseRequest, raw_path: str) -> Target:
        """The request's target, once its key passed: the key is checked before anything about the
        models is said (an unknown model's 404 lists the names; a caller without a key learns nothing)."""
        GRANT.set(None)
        config = handlers.config
        try:
            target = resolve(raw_path, routes, config)
        except shapes.RequestError as err:
            raise hidden_names(err, require(request, keys, "any"), config) from None
        ROUTE.set(target.route.path)
        grant = require(request, keys, target.key_kind(config))
        if grant is None and target.route.action is Action.METRICS and config.metrics_auth:
            raise Unauthorised  # EMBED_METRICS_AUTH with no key in force that has the metrics scope: closed
        GRANT.set(grant)
        if grant is not None:
            request[KEY_ID] = grant.id
        if target.model is not None:
            refusal = model_refusal(GRANT.get(), target.model.names, target.asked)
            if refusal is not None:
                raise Forbidden(refusal)
        return target

    return dispatch


class Unauthorised(Exception):
    """No key, an unknown or an expired one: 401 with an empty body, as TEI answers."""


class Forbidden(Exception):
    """A valid key outside its scopes or models: 403 in the route's error shape, naming what it may use."""


class RateLimited(Exception):
    """A valid key over its rpm: 429 with Retry-After."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def require(request: web.BaseRequest, keys: KeyStore, need: Need) -> Grant | None:
    """The key's grant (None on an open route); raise for 401, 403 or 429."""
    decision = keys.decide(request.headers, need)
    if decision.status == 401:
        raise Unauthorised
    if decision.status == 403:
        raise Forbidden(decision.message)
    if decision.status == 429:
        raise RateLimited(decision.message, decision.retry_after_s or 1)
    return decision.grant


def say_upstream_failure(request: web.BaseRequest, raw_path: str, exc: Exception) -> None:
    """One line per 502 and 504: a TEI dropped or sat on the request (rare; the operator wants the id). A 503
    (the model's TEI restarting) is not logged here: a restart under load makes many, the access log has them."""
    logs.say_about_request(f"Error: {request.method} {raw_path}: {exc}")


def say_refusal(request: web.BaseRequest, exc: Forbidden) -> None:
    """One log line per 403: the message names the key's id, never the key."""
    logs.say_about_request(f"Refused: {request.method} {request.raw_path.split('?', 1)[0]}: {exc}")


def error(status: int, message: str, openai: bool, code: str | None = None, allow: str | None = None,
          retry_after: int | None = None) -> web.Response:
    headers = {"Allow": allow} if allow else {}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return web.Response(status=status, body=shapes.error_body(status, message, openai, code),
                        content_type="application/json", headers=headers)
