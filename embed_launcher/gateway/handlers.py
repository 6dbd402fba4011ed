"""What each route does with a request: route it to a model, cut batches, translate shapes, relay the answer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from embed_launcher.gateway import batching, connections, shapes
from embed_launcher.gateway.config import GatewayConfig, ModelRoute
from embed_launcher.gateway.relay import JSON, relay
from embed_launcher.gateway.routes import Action, Target, default_model
from embed_launcher.gateway.shapes import RequestError
from embed_launcher.gateway.upstream import Reply, Upstream

CHUNKS_IN_FLIGHT = 4  # chunks of one request sent at once; the rest queue (TEI 429s when its permits run out)
JSON_TYPES = ("application/json",)
Handler = Callable[[web.BaseRequest, Target], Awaitable[web.StreamResponse]]


class ChunkFailed(Exception):
    """One chunk of a split batch got an error answer: the others are cancelled, this one is relayed."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


class Handlers:
    """The actions of the route table, bound to one worker's upstreams."""

    def __init__(self, config: GatewayConfig, upstreams: dict[str, Upstream]) -> None:
        self.config, self.upstreams = config, upstreams
        self.actions: dict[Action, Handler] = {
            Action.HEALTH: self.health, Action.MODELS: self.models, Action.MODEL: self.model_entry,
            Action.OPENAI: self.openai, Action.COHERE: self.cohere, Action.RERANK: self.rerank,
            Action.NATIVE: self.native,
        }

    async def handle(self, request: web.BaseRequest, target: Target) -> web.StreamResponse:
        return await self.actions[target.route.action](request, target)

    # the gateway's own answers ----------------------------------------------------------------
    async def health(self, request: web.BaseRequest, target: Target) -> web.StreamResponse:
        """Public: says whether every model was ready once, and names none of them."""
        waiting = sum(1 for u in self.upstreams.values() if not u.seen_ready)
        if not waiting:
            return web.Response(status=200)
        message = f"waiting for the first ready of {waiting} of {len(self.upstreams)} models"
        return web.Response(status=503, body=json.dumps({"error": message, "error_type": "Unhealthy"}),
                            content_type=JSON)

    async def models(self, request: web.BaseRequest, target: Target) -> web.StreamResponse:
        return json_response(shapes.model_list(self.config.models, self.config.created))

    async def model_entry(self, request: web.BaseRequest, target: Target) -> web.StreamResponse:
        asked = target.asked or ""
        model = self.config.find(asked)
        if model is None:
            raise shapes.unknown_model(asked, self.config.models, "/v1/models")
        return json_response(shapes.model_entry(model, asked, self.config.created))

    # choosing the model ----------------------------------------------------------------------
    def model(self, target: Target, asked: Any = None) -> ModelRoute:
        """The path's model, else the body's ``model`` among the route's kinds, else the route's default."""
        if target.model is not None:
            return target.model
        if asked:
            model = self.config.find(asked) if isinstance(asked, str) else None
            if model is None or model.kind not in target.route.kinds:
                raise shapes.unknown_model(str(asked), self.config.of_kind(*target.route.kinds), target.route.path)
            return model
        model = default_model(target.route, self.config)
        if model is None:
            raise RequestError(404, f"no {' or '.join(target.route.kinds)} model is configured", "model_not_found")
        return model

    def upstream(self, model: ModelRoute) -> Upstream:
        return self.upstreams[model.name]

    def relay(self, request: web.BaseRequest, target: Target, reply: Reply,
              rename: str | None = None) -> Awaitable[web.StreamResponse]:
        return relay(request, reply, openai=target.route.openai, timeout_s=self.config.write_timeout_s,
                     rename=rename)

    # routes that keep TEI's shape -----------------------------------------------------------
    async def rerank(self, request: web.BaseRequest, target: Target) -> web.StreamResponse:
        """TEI's /rerank, or Cohere's shape posted there (RAGFlow does): told apart by `documents`."""
        body, raw = await read_json(request)
        if isinstance(body, dict) and "documents" in body and "texts" not in body:
            return await self.cohere_body(request, target, body)
        return await self.native_body(request, target, body, raw)

    async def native(self, request: web.BaseRequest, target: Target) -> web.StreamResponse:
        if request.method in ("GET", "HEAD"):
            reply = await self.upstream(self.model(target)).send("GET", target.route.path)
            return await self.relay(request, target, reply)
        body, raw = await read_json(request)
        return await self.native_body(request, target, body, raw)

    async def native_body(self, request: web.BaseRequest, target: Target, body: Any,
                          raw: bytes) -> web.StreamResponse:
        model, path = self.model(target), target.route.path
        split = batching.SPLITS.get(path)
        if split is None:
            return await self.relay(request, target, await self.upstream(model).send("POST", path, raw))
        batch = batching.batch_of(body, split, path)
        self.check_inputs(batch, split.field)
        chunks = batching.chunk_bodies(body, split, path, model.max_client_batch_size)
        if chunks is None:
            reply = await self.upstream(model).send("POST", path, raw, inputs=len(batch or ()) or 1)
            return await self.relay(request, target, reply)
        replies = await self.send_all(model, path, chunks)
        if isinstance(replies, Reply):
            return await self.relay(request, target, replies)
        answers = [r.body or b"" for r in replies]
        if split.merge == "rerank":
            size = len(batching.batch_of(chunks[0], split, path) or ())
            return json_response(batching.merge_rerank(answers, size))
        return web.Response(body=batching.merge_concat(answers), content_type=JSON)

    async def openai(self, request: web.BaseRequest, target: Target) -> web.StreamResponse:
        body, raw = await read_json(request)
        if not isinstance(body, dict):
            raise RequestError(422, "the body must be a JSON object")
        model = self.model(target, body.get("model"))
        asked = body.get("model") or target.asked or model.name
        if body.get("model", model.name) != model.name:
            body = {**body, "model": model.name}  # TEI warns on every request naming another model
            raw = shapes.tei_body(body)
        split = batching.SPLITS["/v1/embeddings"]
        batch = batching.batch_of(body, split, "/v1/embeddings")
        self.check_inputs(batch, "input")
        chunks = batching.chunk_bodies(body, split, "/v1/embeddings", model.max_client_batch_size)
        if chunks is None:
            reply = await self.upstream(model).send("POST", "/v1/embeddings", raw, inputs=len(batch or ()) or 1)
            return await self.relay(request, target, reply, rename=asked if reply.status == 200 else None)
        replies = await self.send_all(model, "/v1/embeddings", chunks)
        if isinstance(replies, Reply):
            return await self.relay(request, target, replies)
        sizes = [len(batching.batch_of(c, split, "/v1/embeddings") or ()) for c in chunks]
        return web.Response(body=batching.merge_openai([r.body or b"" for r in replies], sizes, asked),
                            content_type=JSON)

    # the Cohere/Jina dialect -----------------------------------------------------------------
    async def cohere(self, request: web.BaseRequest, target: Target) -> web.StreamResponse:
        body, _raw = await read_json(request)
        return await self.cohere_body(request, target, body)

    async def cohere_body(self, request: web.BaseRequest, target: Target, body: Any) -> web.StreamResponse:
        rerank = shapes.parse_cohere(body)
        self.check_inputs(list(rerank.texts), "documents")
        model = self.model(target, rerank.model)
        asked = rerank.model or target.asked or model.name
        tei_body = rerank.tei_body()
        chunks = batching.chunk_bodies(tei_body, batching.SPLITS["/rerank"], "/rerank", model.max_client_batch_size)
        replies = await self.send_all(model, "/rerank", chunks or [tei_body])
        if isinstance(replies, Reply):
            raw = replies.body or b""
            out = shapes.reshape_tei_error(replies.status, raw) if target.route.openai else raw
            return web.Response(status=replies.status, body=out, content_type=JSON)
        size = len(chunks[0]["texts"]) if chunks else len(rerank.texts)
        results = batching.merge_rerank([r.body or b"" for r in replies], size)
        tokens = sum(compute_tokens(r) for r in replies)
        return json_response(shapes.cohere_answer(rerank, results, asked, tokens, target.route.version))

    # talking to TEI --------------------------------------------------------------------------
    def check_inputs(self, items: list[Any] | None, field: str) -> None:
        if items is not None and len(items) > self.config.max_inputs:
            raise RequestError(422, f"`{field}` holds {len(items)} inputs, more than the gateway's limit of "
                                    f"{self.config.max_inputs} (EMBED_GATEWAY_MAX_INPUTS)", "too_many_inputs")

    async def send_all(self, model: ModelRoute, path: str, bodies: list[dict[str, Any]]) -> list[Reply] | Reply:
        """Every chunk's answer in order, at most CHUNKS_IN_FLIGHT at a time; or the first error answer,
        the chunks still running then cancelled (their answers would be thrown away). Each chunk weighs
        its inputs, so the model's replicas share the chunks by load."""
        upstream = self.upstream(model)
        split = batching.SPLITS[path]
        replies: list[Reply | None] = [None] * len(bodies)
        queue = iter(enumerate(bodies))

        async def sender() -> None:
            for number, body in queue:  # one shared iterator: each sender takes the next chunk
                inputs = len(batching.batch_of(body, split, path) or ()) or 1
                reply = await upstream.send("POST", path, shapes.tei_body(body), whole=True, inputs=inputs)
                if reply.status >= 300:
                    raise ChunkFailed(reply)
                replies[number] = reply

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(CHUNKS_IN_FLIGHT, len(bodies))):
                    group.create_task(sender())
        except BaseExceptionGroup as failed:
            first = failed.exceptions[0]
            if isinstance(first, ChunkFailed):
                return first.reply
            raise first from None
        return [r for r in replies if r is not None]


def compute_tokens(reply: Reply) -> int:
    """TEI's `x-compute-tokens`; a malformed one counts as 0 (usage is informative, not worth a 500)."""
    try:
        return max(int(reply.headers.get("x-compute-tokens", "0") or 0), 0)
    except ValueError:
        return 0


async def read_json(request: web.BaseRequest) -> tuple[Any, bytes]:
    """The body, parsed; TEI's 415 for another content type, 400 for bad or too deeply nested JSON."""
    if request.content_type not in JSON_TYPES and not request.content_type.endswith("+json"):
        raise RequestError(415, "Expected request with `Content-Type: application/json`", "unsupported_media_type")
    raw = await request.read()  # its deadline: the connection's (connections.DeadlineHandler)
    connections.body_read(request)
    try:
        return json.loads(raw), raw
    except ValueError as exc:
        raise RequestError(400, f"Failed to parse the request body as JSON: {exc}", "invalid_json") from None
    except RecursionError:
        raise RequestError(400, "Failed to parse the request body as JSON: nested too deeply",
                           "invalid_json") from None


def json_response(payload: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(payload, ensure_ascii=False), content_type=JSON)
