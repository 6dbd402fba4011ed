"""Which route a path is, which model it reaches, and which key it needs (pure: no sockets, no aiohttp)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import unquote

from embed_launcher.gateway.config import GatewayConfig, ModelRoute
from embed_launcher.gateway.shapes import RequestError

GET, POST = frozenset({"GET", "HEAD"}), frozenset({"POST"})
ANY_KIND = ("embed", "sparse", "rerank")
MODEL_PREFIX = "/models/"
MODEL_ENTRY = "/v1/models/"


class Action(StrEnum):
    """What the gateway does with a route's requests (a str: `route.action == "health"` holds)."""

    HEALTH = "health"  # the gateway's own readiness, public
    MODELS = "models"  # the OpenAI model list
    MODEL = "model"  # one OpenAI model entry
    OPENAI = "openai"  # OpenAI embeddings: routed by the body's `model`
    COHERE = "cohere"  # Cohere/Jina rerank, translated to TEI's
    COHERE_EMBED = "cohere_embed"  # Cohere embed v1/v2, translated to TEI's /embed
    RERANK = "rerank"  # TEI's /rerank, or Cohere's shape when the body has `documents`
    NATIVE = "native"  # TEI's own route, relayed as it is
    OLLAMA_EMBED = "ollama_embed"  # Ollama's /api/embed and /api/embeddings, translated to TEI's /embed
    OLLAMA_TAGS = "ollama_tags"  # Ollama's model list (the embedding models)
    OLLAMA_SHOW = "ollama_show"  # Ollama's one-model description
    OLLAMA_VERSION = "ollama_version"  # Ollama's version probe, public like /health
    METRICS = "metrics"  # the gateway's Prometheus text: its own families and every TEI's, relabelled


class Dialect(StrEnum):
    """Which API a route speaks: one module of gateway/dialects/ each."""

    TEI = "tei"
    OPENAI = "openai"
    COHERE = "cohere"
    JINA = "jina"
    OLLAMA = "ollama"


PUBLIC = frozenset({Action.HEALTH, Action.OLLAMA_VERSION, Action.METRICS})
LISTINGS = frozenset({Action.MODELS, Action.MODEL, Action.OLLAMA_TAGS, Action.OLLAMA_SHOW})


@dataclass(frozen=True)
class Route:
    """A route the gateway serves: the path TEI knows it by, what the gateway does, whose default it reaches."""

    path: str
    methods: frozenset[str]
    action: Action
    kinds: tuple[str, ...] = ()  # the default model is the first of these kinds configured
    openai: bool = False  # errors in OpenAI's shape rather than TEI's
    version: str = "1"  # Cohere API version for the answer's meta
    dialect: Dialect = Dialect.TEI  # the module that reads its requests and shapes its answers

    @property
    def allow(self) -> str:
        """The `Allow` header of a 405 on this route."""
        return ", ".join(m for m in ("GET", "HEAD", "POST") if m in self.methods)


def _table(kinds_of_neutral: tuple[str, ...], rerank_only: bool) -> dict[str, Route]:
    rerank, neutral = ("rerank",), kinds_of_neutral
    routes = [
        Route("/health", GET, Action.HEALTH), Route("/ping", GET, Action.HEALTH),
        Route("/v1/rerank", POST, Action.COHERE, rerank, openai=True, dialect=Dialect.COHERE),
        Route("/v2/rerank", POST, Action.COHERE, rerank, openai=True, version="2", dialect=Dialect.COHERE),
        Route("/rerank", POST, Action.RERANK, rerank), Route("/predict", POST, Action.NATIVE, rerank),
        Route("/info", GET, Action.NATIVE, kinds_of_neutral), Route("/tokenize", POST, Action.NATIVE, neutral),
        Route("/decode", POST, Action.NATIVE, neutral), Route("/", POST, Action.NATIVE, neutral),
        Route("/invocations", POST, Action.NATIVE, neutral),
        # Every model's and replica's, on every listener (public as TEI's, or EMBED_METRICS_AUTH: gateway/scrape.py).
        Route("/metrics", GET, Action.METRICS),
    ]
    if not rerank_only:
        routes += [
            Route("/v1/models", GET, Action.MODELS, openai=True, dialect=Dialect.OPENAI),
            Route(MODEL_ENTRY, GET, Action.MODEL, openai=True, dialect=Dialect.OPENAI),
            Route("/v1/embeddings", POST, Action.OPENAI, ("embed",), openai=True, dialect=Dialect.OPENAI),
            Route("/embeddings", POST, Action.OPENAI, ("embed",), openai=True, dialect=Dialect.OPENAI),
            Route("/v1/embed", POST, Action.COHERE_EMBED, ("embed",), openai=True, dialect=Dialect.COHERE),
            Route("/v2/embed", POST, Action.COHERE_EMBED, ("embed",), openai=True, version="2",
                  dialect=Dialect.COHERE),
            # Ollama's errors are `{"error": "<message>"}`: TEI's flat shape is that plus `error_type`.
            Route("/api/embed", POST, Action.OLLAMA_EMBED, ("embed",), dialect=Dialect.OLLAMA),
            Route("/api/embeddings", POST, Action.OLLAMA_EMBED, ("embed",), version="legacy",
                  dialect=Dialect.OLLAMA),
            Route("/api/tags", GET, Action.OLLAMA_TAGS, dialect=Dialect.OLLAMA),
            Route("/api/show", POST, Action.OLLAMA_SHOW, dialect=Dialect.OLLAMA),
            Route("/api/version", GET, Action.OLLAMA_VERSION, dialect=Dialect.OLLAMA),
            Route("/embed", POST, Action.NATIVE, ("embed",)), Route("/embed_all", POST, Action.NATIVE, ("embed",)),
            Route("/similarity", POST, Action.NATIVE, ("embed",)),
            Route("/embed_sparse", POST, Action.NATIVE, ("sparse",)),
        ]
    return {route.path: route for route in routes}


# With EMBED_GATEWAY=false TEI itself holds the public ports, and the gateway listens on the Prometheus ports
# for /metrics alone (and /health, for the supervisor's checks): nothing there reaches a model.
METRICS_ONLY = {"/health": Route("/health", GET, Action.HEALTH), "/metrics": Route("/metrics", GET, Action.METRICS)}
TABLES = {"all": _table(ANY_KIND, rerank_only=False), "rerank": _table(("rerank",), rerank_only=True),
          "metrics": METRICS_ONLY}
PREFIXABLE = frozenset(p for p, r in TABLES["all"].items() if r.action not in PUBLIC | LISTINGS)


@dataclass(frozen=True)
class Target:
    """A request resolved: its route, the model named in its path (if any) and the name used there."""

    route: Route
    model: ModelRoute | None = None
    asked: str | None = None

    def key_kind(self, config: GatewayConfig) -> str | None:
        """`rerank` or `embed`: which key guards this request; None for public routes, "any" for listings."""
        if self.route.action is Action.METRICS and config.metrics_auth:
            return "metrics"
        if self.route.action in PUBLIC:
            return None
        if self.route.action in LISTINGS:
            return "any"
        model = self.model or default_model(self.route, config)
        kind = model.kind if model is not None else self.route.kinds[0]
        return "rerank" if kind == "rerank" else "embed"


def default_model(route: Route, config: GatewayConfig) -> ModelRoute | None:
    for kind in route.kinds:
        model = config.default(kind)
        if model is not None:
            return model
    return None


def resolve(raw_path: str, routes: str, config: GatewayConfig) -> Target:
    """The target of ``raw_path`` (still percent-encoded) on a listener serving ``routes``; 404 otherwise."""
    table = TABLES[routes]
    route = table.get(raw_path)
    if route is not None:
        return Target(route)
    if raw_path.startswith(MODEL_ENTRY) and MODEL_ENTRY in table:
        return Target(table[MODEL_ENTRY], asked=unquote(raw_path[len(MODEL_ENTRY):]))
    if raw_path.startswith(MODEL_PREFIX) and not PREFIXABLE.isdisjoint(table):
        return _prefixed(unquote(raw_path[len(MODEL_PREFIX):]), table, config)
    raise RequestError(404, f"no route {raw_path}", "not_found")


def speaks_openai(raw_path: str, routes: str) -> bool:
    """Whether errors on ``raw_path`` take OpenAI's shape, even when it resolves to nothing (an unknown model):
    anything under /v1/ or /v2/, and an OpenAI route after /models/{name}."""
    if raw_path.startswith(("/v1/", "/v2/")) or raw_path == "/embeddings":
        return True
    path = unquote(raw_path)
    if not path.startswith(MODEL_PREFIX):
        return False
    # the longest route the path ends with: `/api/embeddings` (Ollama's) is not `/embeddings` (OpenAI's)
    tails = [tail for tail in TABLES[routes] if tail != "/" and path.endswith(tail)]
    return bool(tails) and TABLES[routes][max(tails, key=len)].openai


def _prefixed(rest: str, table: dict[str, Route], config: GatewayConfig) -> Target:
    """`/models/{name}/{route}`: any route, for the model called ``name`` (which may hold a slash)."""
    names = sorted((n for m in config.models for n in m.names), key=len, reverse=True)
    for name in names:
        tail = rest[len(name):]
        if rest.startswith(name) and tail in table and tail in PREFIXABLE:
            model = config.find(name)
            assert model is not None
            if routes_allow(table, model):
                return Target(table[tail], model, name)
    choices = [m for m in config.models if routes_allow(table, m)]
    raise RequestError(404, f"no route /models/{rest}: expected /models/{{name}}/{{route}} with a name among "
                            f"{', '.join(n for m in choices for n in m.names)}", "not_found")


def routes_allow(table: dict[str, Route], model: ModelRoute) -> bool:
    """A reranking-only listener reaches rerankers only."""
    return "/v1/embeddings" in table or model.kind == "rerank"
