"""What each route does with a request: route it to a model, cut batches, translate shapes, relay the answer."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from embed_launcher.gateway import batching, shapes
from embed_launcher.gateway.config import GatewayConfig, ModelRoute
from embed_launcher.gateway.routes import Target, default_model
from embed_launcher.gateway.shapes import RequestError
from embed_launcher.gateway.upstream import Reply, Upstream

RELAYED = ("content-type",)
JSON = "application/json"
TAIL_BYTES = 4096  # the end of an OpenAI answer that holds `"model":…` (after the data)
MODEL_KEY = b'"model":'
DECODER = json.JSONDecoder()


class Handlers:
    """The actions of the route table, bound to one worker's upstreams."""

    def __init__(self, config: GatewayConfig, upstreams: dict[str, Upstream]) -> None:
        self.config, self.upstreams = config, upstreams

    async def handle(self, request: web.Request, target: Target) -> web.StreamResponse:
        action = target.route.action
        if action == "health":
            return self.health()
        if action == "models":
            return json_response(shapes.model_list(self.config.models, self.config.created))
        if action == "model":
            return self.model_entry(target)
        if request.method in ("GET", "HEAD"):
            return await self.relay(request, await self.upstream(self.model(target)).send("GET", target.route.path))
        body, raw = await read_json(request)
        if action == "openai":
            return await self.openai(request, target, body, raw)
        if action == "cohere" or (action == "rerank" and isinstance(body, dict) and "documents" in body
                                  and "texts" not in body):
            return await self.cohere(target, body)
        return await self.native(request, target, body, raw)

    # the gateway's own answers ----------------------------------------------------------------
    def health(self) -> web.Response:
        waiting = [u.model.name for u in self.upstreams.values() if not u.seen_ready]
        if not waiting:
            return web.Response(status=200)
        message = f"waiting for the first ready of {', '.join(waiting)}"
        return web.Response(status=503, body=json.dumps({"error": message, "error_type": "Unhealthy"}),
                            content_type=JSON)

    def model_entry(self, target: Target) -> web.Response:
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

    # routes that keep TEI's shape -----------------------------------------------------------
    async def native(self, request: web.Request, target: Target, body: Any, raw: bytes) -> web.StreamResponse:
        model, path = self.model(target), target.route.path
        split = batching.SPLITS.get(path)
        chunks = batching.chunk_bodies(body, split, path, model.max_client_batch_size) if split else None
        if chunks is None:
            return await self.relay(request, await self.upstream(model).send("POST", path, raw))
        replies = await self.send_all(model, path, chunks)
        failed = first_failure(replies)
        if failed is not None:
            return await self.relay(request, failed)
        answers = [r.body or b"" for r in replies]
        if split is not None and split.merge == "rerank":
            size = len(batching.batch_of(chunks[0], split, path) or ())
            return json_response(batching.merge_rerank(answers, size))
        return web.Response(body=batching.merge_concat(answers), content_type=JSON)

    async def openai(self, request: web.Request, target: Target, body: Any, raw: bytes) -> web.StreamResponse:
        if not isinstance(body, dict):
            raise RequestError(422, "the body must be a JSON object")
        model = self.model(target, body.get("model"))
        asked = body.get("model") or target.asked or model.name
        if body.get("model", model.name) != model.name:
            body = {**body, "model": model.name}  # TEI warns on every request naming another model
            raw = json.dumps(body).encode()
        chunks = batching.chunk_bodies(body, batching.SPLITS["/v1/embeddings"], "/v1/embeddings",
                                       model.max_client_batch_size)
        if chunks is None:
            reply = await self.upstream(model).send("POST", "/v1/embeddings", raw)
            return await self.relay(request, reply, rename=asked if reply.status == 200 else None)
        replies = await self.send_all(model, "/v1/embeddings", chunks)
        failed = first_failure(replies)
        if failed is not None:
            return await self.relay(request, failed)
        merged = batching.merge_openai([r.body or b"" for r in replies])
        return json_response({**merged, "model": asked})

    # the Cohere/Jina dialect -----------------------------------------------------------------
    async def cohere(self, target: Target, body: Any) -> web.Response:
        rerank = shapes.parse_cohere(body)
        model = self.model(target, rerank.model)
        asked = rerank.model or target.asked or model.name
        tei_body = rerank.tei_body()
        chunks = batching.chunk_bodies(tei_body, batching.SPLITS["/rerank"], "/rerank", model.max_client_batch_size)
        replies = await self.send_all(model, "/rerank", chunks or [tei_body])
        failed = first_failure(replies)
        if failed is not None:
            raw = failed.body or b""
            out = shapes.reshape_tei_error(failed.status, raw) if target.route.openai else raw
            return web.Response(status=failed.status, body=out, content_type=JSON)
        size = len(chunks[0]["texts"]) if chunks else len(rerank.texts)
        results = batching.merge_rerank([r.body or b"" for r in replies], size)
        tokens = sum(int(r.headers.get("x-compute-tokens", "0") or 0) for r in replies)
        return json_response(shapes.cohere_answer(rerank, results, asked, tokens, target.route.version))

    # talking to TEI --------------------------------------------------------------------------
    async def send_all(self, model: ModelRoute, path: str, bodies: list[dict[str, Any]]) -> list[Reply]:
        upstream = self.upstream(model)
        return list(await asyncio.gather(*(upstream.send("POST", path, json.dumps(b).encode(), whole=True)
                                           for b in bodies)))

    async def relay(self, request: web.Request, reply: Reply, rename: str | None = None) -> web.StreamResponse:
        """TEI's answer to the client as it is: status, body, content type and TEI's `x-` timing headers."""
        headers = {k: v for k, v in reply.headers.items() if k.lower().startswith("x-")}
        content_type = reply.headers.get("content-type")
        if content_type:
            headers["Content-Type"] = content_type
        if reply.body is not None:
            body = rename_model(reply.body, rename) if rename else reply.body
            return web.Response(status=reply.status, body=body, headers=headers)
        assert reply.response is not None
        out = web.StreamResponse(status=reply.status, headers=headers)
        if rename is None and reply.response.content_length is not None:
            out.content_length = reply.response.content_length
        try:
            await out.prepare(request)
            tail = b""
            async for chunk in reply.response.content.iter_chunked(1 << 16):
                if rename is None:
                    await out.write(chunk)
                    continue
                tail += chunk
                if len(tail) > TAIL_BYTES:
                    await out.write(tail[:-TAIL_BYTES])
                    tail = tail[-TAIL_BYTES:]
            await out.write(rename_model(tail, rename) if rename else b"")
            await out.write_eof()
        finally:
            reply.response.release()
        return out


def rename_model(body: bytes, asked: str) -> bytes:
    """The last `"model":"…"` of an OpenAI answer set to ``asked`` (it follows the data, so it is in the tail)."""
    at = body.rfind(MODEL_KEY)
    if at < 0:
        return body
    tail = body[at + len(MODEL_KEY):].decode("utf-8", "replace")
    start = len(tail) - len(tail.lstrip())
    if not tail[start:].startswith('"'):
        return body
    value, end = DECODER.raw_decode(tail, start)
    if value == asked:
        return body
    return body[:at] + MODEL_KEY + json.dumps(asked).encode() + tail[end:].encode()


def first_failure(replies: list[Reply]) -> Reply | None:
    return next((r for r in replies if r.status >= 300), None)


async def read_json(request: web.Request) -> tuple[Any, bytes]:
    raw = await request.read()
    try:
        return json.loads(raw), raw
    except ValueError as exc:
        raise RequestError(400, f"Failed to parse the request body as JSON: {exc}", "invalid_json") from None


def json_response(payload: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(payload), content_type=JSON)
