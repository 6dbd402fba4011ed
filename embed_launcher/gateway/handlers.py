"""What each route does with a request: route it to a model, cut batches, translate shapes, relay the answer."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web

from embed_launcher.gateway import batching, connections, logs, shapes, tokens
from embed_launcher.gateway.config import GatewayConfig, ModelRoute
from embed_launcher.gateway.dialects import EmbedCall, cohere, ollama, tei
from embed_launcher.gateway.dialects import openai as openai_dialect
from embed_launcher.gateway.metrics import REQUEST_MODEL, Metrics
from embed_launcher.gateway.relay import JSON, relay
from embed_launcher.gateway.routes import Action, Target, default_model
from embed_launcher.gateway.scrape import CONTENT_TYPE, Scraper
from embed_launcher.gateway.shapes import RequestError
from embed_launcher.gateway.upstream import Reply, Upstream, UpstreamFailed, UpstreamTimeout, UpstreamUnavailable

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

    def __init__(self, config: GatewayConfig, upstreams: dict[str, Upstream], metrics: Metrics | None = None) -> None:
        self.config, self.upstreams = config, upstreams
        self.metrics = metrics or Metrics(config, counting=config.metrics)
        self.scraper = Scraper(config, upstreams, self.metrics)
        self.decode = tokens.decoder() if config.token_input == "decode" else None
        # Every route's Upstream, current or replaced by a reload: a request that chose its model before
        # a switch keeps that model's TEIs (they drain), even once its name routes elsewhere or nowhere.
        self.by_route: dict[ModelRoute, Upstream] = {u.model: u for u in upstreams.values()}
        self.facts: dict[str, dict[str, Any]] = {}  # per model, what its TEI told: dimensions, max_input_length
        self.missing_prompts: set[tuple[str, str]] = set()  # (model, prompt name) its TEI refused
        self.actions: dict[Action, Handler] = {
            Action.HEALTH: self.health, Action.MODELS: self.models, Action.MODEL: self.model_entry,
            Action.OPENAI: self.openai, Action.COHERE: self.cohere, Action.COHERE_EMBED: self.cohere_embed,
            Action.RERANK: self.rerank, Action.NATIVE: self.native, Action.OLLAMA_EMBED: self.ollama_embed,
            Action.OLLAMA_TAGS: self.ollama_tags, Action.OLLAMA_SHOW: self.ollama_show,
            Action.OLLAMA_VERSION: self.ollama_version, Action.METRICS: self.prometheus,
        }

    def swap(self, config: GatewayConfig, upstreams: dict[str, Upstream]) -> None:
        """A reload: the new routes in force for every request from now on. No await in here, so no request
        sees half of it; the caller retires the replaced upstreams (``retire``) once their requests are done."""
        self.decode = tokens.decoder() if config.token_input == "decode" else None
        self.by_route.update({u.model: u for u in upstreams.values()})
        self.facts = {name: facts for name, facts in self.facts.items()
                      if name in upstreams and upstreams[name] is self.upstreams.get(name)}
        self.config, self.upstreams = config, upstreams
        self.scraper.config, self.scraper.upstreams = config, upstreams  # /metrics asks the new TEIs
        self.metrics.present(config)

    def retire(self, upstream: Upstream) -> None:
        """Forget a replaced upstream (its requests are done, its connections closed)."""
        if self.by_route.get(upstream.model) is upstream:
            del self.by_route[upstream.model]

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

    async def prometheus(self, request: web.BaseRequest, target: Target) -> web.StreamResponse:
        """Every model's and replica's metrics, and the gateway's own (gateway/scrape.py)."""
        return web.Response(body=await self.scraper.render(), headers={"Content-Type": CONTENT_TYPE})

    def visible(self, models: Sequence[ModelRoute]) -> list[ModelRoute]:
        """The models this caller may see: every one here; a key limited to some sees only those."""
        return list(models)

    async def models(self, request: web.BaseRequest, target: Target) -> web.StreamResponse:
        shown = self.visible(self.config.models)
        facts = await asyncio.gather(*(self.facts_of(m) for m in shown))
        known = {m.name: f for m, f in zip(shown, facts, strict=True)}
        return json_response(openai_dialect.model_list(shown, self.config.created, known))

    async def model_entry(self, request: web.BaseRequest, target: Target) -> web.StreamResponse:
        asked = target.asked or ""
        model = self.config.find(asked)
        if model is None or not self.visible([model]):  # one the caller may not see is as if it did not exist
            raise shapes.unknown_model(asked, self.visible(self.config.models), "/v1/models")
        return json_response(openai_dialect.model_entry(model, asked, self.config.created, await self.facts_of(model)))

    async def facts_of(self, model: ModelRoute) -> dict[str, Any]:
        """What a model's TEI tells of it (`max_input_length` from /info; `dimensions`, from one probe embed),
        once per worker. A model not ready now is not waited for: its entry goes without them this time."""
        if model.name in self.facts or not self.upstream(model).ready_now():
            return self.facts.get(model.name, {})
        upstream, found = self.upstream(model), {}
        try:
            info = await upstream.send("GET", "/info", whole=True)
            if info.status == 200:
                found["max_input_length"] = json.loads(info.body or b"{}").get("max_input_length")
            if model.kind == "embed":
                probe = await upstream.send("POST", "/embed", b'{"inputs":"dimensions"}', whole=True)
                if probe.status == 200:
                    found["dimensions"] = len(json.loads(probe.body or b"[[]]")[0])
        except (UpstreamUnavailable, UpstreamFailed, UpstreamTimeout, ValueError, IndexError, TypeError,
                AttributeError):
            return {}
        found = {k: v for k, v in found.items() if isinstance(v, int)}
        if len(found) == (2 if model.kind == "embed" else 1):
            self.facts[model.name] = found
        return found

    # choosing the model ----------------------------------------------------------------------
    def model(self, target: Target, asked: Any = None) -> ModelRoute:
        """The path's model, else the body's ``model`` among the route's kinds, else the route's default."""
        model = self._model(target, asked)
        log = logs.CURRENT.get()
        if log is not None:
            log.model = model.name  # for the access log and the request's error lines
        return model

    def _model(self, target: Target, asked: Any) -> ModelRoute:
        if target.model is not None:
            REQUEST_MODEL.set(target.model.name)
            return target.model
        if asked:
            model = self.config.find(asked) if isinstance(asked, str) else None
            if model is None or model.kind not in target.route.kinds:
                raise shapes.unknown_model(str(asked), self.visible(self.config.of_kind(*target.route.kinds)),
                                           target.route.path)
            REQUEST_MODEL.set(model.name)
            return model
        model = default_model(target.route, self.config)
        if model is None:
            raise RequestError(404, f"no {' or '.join(target.route.kinds)} model is configured", "model_not_found")
        REQUEST_MODEL.set(model.name)
        return model

    def upstream(self, model: ModelRoute) -> Upstream:
        return self.by_route.get(model) or self.upstreams[model.name]

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
            self.metrics.sent_inputs(model.name, len(batch or ()) or 1)
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
        if openai_dialect.has_token_ids(body.get("input")) and self.config.token_input != "passthrough":
            body = {**body, "input": self.decoded(body["input"])}
            raw = shapes.tei_body(body)
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
            self.metrics.sent_inputs(model.name, len(batch or ()) or 1)
            reply = await self.upstream(model).send("POST", "/v1/embeddings", raw, inputs=len(batch or ()) or 1)
            return await self.relay(request, target, reply, rename=asked if reply.status == 200 else None)
        replies = await self.send_all(model, "/v1/embeddings", chunks)
        if isinstance(replies, Reply):
            return await self.relay(request, target, replies)
        sizes = [len(batching.batch_of(c, split, "/v1/embeddings") or ()) for c in chunks]
        return web.Response(body=batching.merge_openai([r.body or b"" for r in replies], sizes, asked),
                            content_type=JSON)

    def decoded(self, value: Any) -> Any:
        """Token ids under EMBED_TOKEN_INPUT: refused (reject), or tiktoken's decoded to text (decode)."""
        if self.decode is None:
            raise openai_dialect.token_rejection()
        try:
            return openai_dialect.decoded_input(value, self.decode)
        except (KeyError, ValueError, OverflowError, TypeError) as exc:
            raise RequestError(400, f"`input` holds ids that are not {openai_dialect.TIKTOKEN_ENCODING} tokens "
                                    f"({type(exc).__name__}: {exc})", "invalid_token_ids") from None

    # the Cohere/Jina dialect -----------------------------------------------------------------
    async def cohere(self, request: web.BaseRequest, target: Target) -> web.StreamResponse:
        body, _raw = await read_json(request)
        return await self.cohere_body(request, target, body)

    async def cohere_embed(self, request: web.BaseRequest, target: Target) -> web.StreamResponse:
        body, _raw = await read_json(request)
        embed = cohere.parse_embed(body, target.route.version)
        model = self.model(target, embed.call.model)
        candidates = cohere.prompt_candidates(embed.input_type, model.prompts)
        result = await self.embed(target, model, embed.call, candidates)
        if isinstance(result, web.Response):
            return result
        vectors, used, count = result
        warnings = []
        if embed.input_type is not None and used is None:
            warnings.append(cohere.no_prompt_warning(embed.input_type, model.name))
        return json_response(cohere.embed_answer(embed, vectors, count, target.route.version, warnings))

    async def cohere_body(self, request: web.BaseRequest, target: Target, body: Any) -> web.StreamResponse:
        rerank = cohere.parse_rerank(body)
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
        return json_response(cohere.rerank_answer(rerank, results, asked, tokens, target.route.version))

    # the Ollama dialect ----------------------------------------------------------------------
    async def ollama_embed(self, request: web.BaseRequest, target: Target) -> web.StreamResponse:
        began = time.monotonic_ns()
        body, _raw = await read_json(request)
        legacy = target.route.version == "legacy"
        call = ollama.parse_embeddings(body) if legacy else ollama.parse_embed(body)
        model = self.model(target, call.model)
        result = await self.embed(target, model, call, ())
        if isinstance(result, web.Response):
            return result
        vectors, _used, count = result
        if legacy:
            return json_response(ollama.embeddings_answer(vectors))
        asked = call.model or model.name
        return json_response(ollama.embed_answer(asked, vectors, count, time.monotonic_ns() - began))

    async def ollama_tags(self, request: web.BaseRequest, target: Target) -> web.StreamResponse:
        return json_response(ollama.tags(self.visible(self.config.models), self.config.created))

    async def ollama_show(self, request: web.BaseRequest, target: Target) -> web.StreamResponse:
        body, _raw = await read_json(request)
        asked = ollama.model_name(body.get("model", body.get("name")) if isinstance(body, dict) else None)
        model = self.config.find(asked) if asked else None
        if model is None or model.kind != "embed" or not self.visible([model]):
            raise shapes.unknown_model(str(asked), self.visible(self.config.of_kind("embed")), target.route.path)
        return json_response(ollama.show(model, self.config.created, await self.facts_of(model)))

    async def ollama_version(self, request: web.BaseRequest, target: Target) -> web.StreamResponse:
        return json_response(ollama.version())

    # one embedding call, whatever the dialect ------------------------------------------------
    async def embed(self, target: Target, model: ModelRoute, call: EmbedCall,
                    prompts: Sequence[str]) -> tuple[list[list[float]], str | None, int] | web.Response:
        """``call`` through TEI's /embed, cut to the model's batch size: (vectors, the prompt used, tokens),
        or TEI's error in the route's shape. The prompt names are tried in order; one that the model's TEI
        refuses is remembered and never sent again; with none left the texts go without a prompt."""
        self.check_inputs(list(call.texts), "texts")
        for name in [p for p in prompts if (model.name, p) not in self.missing_prompts]:
            replies = await self.embed_chunks(model, {**call.tei_body(), "prompt_name": name})
            if isinstance(replies, Reply) and tei.is_prompt_rejection(replies.status, replies.body or b"", name):
                self.missing_prompts.add((model.name, name))
                continue
            return self.embedded(target, replies, name)
        return self.embedded(target, await self.embed_chunks(model, call.tei_body(prompt=False)), None)

    async def embed_chunks(self, model: ModelRoute, body: dict[str, Any]) -> list[Reply] | Reply:
        chunks = batching.chunk_bodies(body, batching.SPLITS["/embed"], "/embed", model.max_client_batch_size)
        return await self.send_all(model, "/embed", chunks or [body])

    def embedded(self, target: Target, replies: list[Reply] | Reply,
                 prompt: str | None) -> tuple[list[list[float]], str | None, int] | web.Response:
        if isinstance(replies, Reply):
            raw = replies.body or b""
            out = shapes.reshape_tei_error(replies.status, raw) if target.route.openai else raw
            return web.Response(status=replies.status, body=out, content_type=JSON)
        vectors = tei.vectors([r.body or b"" for r in replies])
        return vectors, prompt, sum(compute_tokens(r) for r in replies)

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
        self.metrics.sent_inputs(model.name, sum(len(batching.batch_of(b, split, path) or ()) or 1 for b in bodies))
        if len(bodies) > 1:
            self.metrics.split(model.name)
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
