"""The gateway's configuration as data: frozen records, JSON in and out, every problem reported at once."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

KINDS = ("embed", "sparse", "rerank")
TOKEN_POLICIES = ("reject", "decode", "passthrough")  # EMBED_TOKEN_INPUT
ROUTE_SETS = ("all", "rerank", "metrics")  # metrics: the Prometheus port of EMBED_GATEWAY=false
BALANCES = ("least-inputs", "round-robin")  # EMBED_GATEWAY_BALANCE
LOG_FORMATS = ("text", "json")  # EMBED_LOG_FORMAT
DEFAULT_WAIT_S = 30.0
DEFAULT_MAX_BODY_BYTES = 2_000_000  # TEI's own default payload limit
DEFAULT_MAX_INPUTS = 8192  # inputs in one request, whatever the models' batch limits (cut into chunks)
DEFAULT_READ_TIMEOUT_S = 60.0  # a client sends a request's headers and body within this
DEFAULT_WRITE_TIMEOUT_S = 60.0  # a client reads its answer within this, else it is dropped
DEFAULT_IDLE_TIMEOUT_S = 75.0  # an idle keep-alive connection is closed after this
DEFAULT_UPSTREAM_TIMEOUT_S = 600.0  # one request to a TEI, answer read in full
DEFAULT_RETIRE_S = 60.0  # a reload: how long the replaced routes' connections stay open
DEFAULT_DRAIN_S = 5.0  # in-flight requests get this long after SIGTERM (the plan fits it in the stop timeout)
DEFAULT_SCRAPE_TIMEOUT_S = 1.0  # /metrics waits this long for each TEI's; a late one is left out and counted


class GatewayConfigError(ValueError):
    """Every problem of a configuration, in one message."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid gateway configuration: " + "; ".join(self.problems))


@dataclass(frozen=True)
class Listener:
    """One public socket and the set of routes it serves (`all`, only the reranking ones, or only /metrics)."""

    host: str
    port: int
    routes: str = "all"

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ModelRoute:
    """One model: the names clients may use for it, its kind and the TEI children (replicas) that serve it."""

    name: str
    kind: str
    upstream: str  # the first replica's TEI
    aliases: tuple[str, ...] = ()
    max_client_batch_size: int = 512
    default: bool = False
    # Cohere's input_type → the model's prompt name (the models file's `prompts`); empty: the common names.
    prompts: dict[str, str] = field(default_factory=dict, hash=False)
    matryoshka_dimensions: tuple[int, ...] = ()  # the sizes the model was trained to be cut to, when known
    replicas: tuple[str, ...] = ()  # every replica's TEI, when there are several (upstream is the first)

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    @property
    def upstreams(self) -> tuple[str, ...]:
        """Every TEI serving this model, one per replica."""
        return self.replicas or (self.upstream,)


@dataclass(frozen=True)
class GatewayConfig:
    """What `EMBED_GATEWAY_CONFIG` carries (no secrets: the keys travel in their own variables).

    >>> config = GatewayConfig.from_json(text)
    >>> config.find("small").upstream
    'http://127.0.0.1:18000'
    """

    listen: tuple[Listener, ...]
    models: tuple[ModelRoute, ...]
    wait_s: float = DEFAULT_WAIT_S
    access_log: bool = False
    workers: int = 1
    created: int = 0
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_inputs: int = DEFAULT_MAX_INPUTS
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S
    write_timeout_s: float = DEFAULT_WRITE_TIMEOUT_S
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    upstream_timeout_s: float = DEFAULT_UPSTREAM_TIMEOUT_S
    drain_s: float = DEFAULT_DRAIN_S
    token_input: str = "reject"  # EMBED_TOKEN_INPUT: token ids on OpenAI routes (reject, decode, passthrough)
    balance: str = "least-inputs"  # how a model's replicas share its requests (BALANCES)
    metrics: bool = True  # count requests for /metrics (off only to measure what counting costs)
    metrics_auth: bool = False  # EMBED_METRICS_AUTH: /metrics needs a key with the metrics scope
    scrape_timeout_s: float = DEFAULT_SCRAPE_TIMEOUT_S  # /metrics: each TEI's own, within this
    status_file: str = ""  # the launcher's live status (replica states, restarts) for /metrics; "": none
    log_format: str = "text"  # EMBED_LOG_FORMAT: the access log's and the gateway's own lines (LOG_FORMATS)
    # A reload (SIGHUP) applies a configuration file of a higher generation; the routes it replaces keep
    # their connections this long for the requests in flight on them (EMBED_DRAIN_TIMEOUT and a margin).
    generation: int = 0
    retire_s: float = DEFAULT_RETIRE_S
    _index: dict[str, ModelRoute] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        problems = validate(self)
        if problems:
            raise GatewayConfigError(problems)
        for model in self.models:
            for name in model.names:
                self._index[name] = model

    def find(self, name: str) -> ModelRoute | None:
        """The model a client means by ``name`` (served name or alias)."""
        return self._index.get(name)

    def default(self, kind: str) -> ModelRoute | None:
        return next((m for m in self.models if m.kind == kind and m.default), None)

    def of_kind(self, *kinds: str) -> tuple[ModelRoute, ...]:
        return tuple(m for m in self.models if m.kind in kinds)

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("_index")
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> GatewayConfig:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise GatewayConfigError([f"not JSON ({exc})"]) from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: object) -> GatewayConfig:
        problems = _shape_problems(data)
        if problems:
            raise GatewayConfigError(problems)
        assert isinstance(data, dict)
        listen = tuple(Listener(**item) for item in data["listen"])
        models = tuple(ModelRoute(**{**item, "aliases": tuple(item.get("aliases", ())),
                                     "matryoshka_dimensions": tuple(item.get("matryoshka_dimensions", ())),
                                     "replicas": tuple(item.get("replicas", ()))})
                       for item in data["models"])
        rest = {k: v for k, v in data.items() if k not in ("listen", "models")}
        return cls(listen=listen, models=models, **rest)


# Shape: the JSON types, before the records are built -------------------------------------------

_TOP = {"listen": list, "models": list, "wait_s": (int, float), "access_log": bool, "workers": int,
        "created": int, "max_body_bytes": int, "max_inputs": int, "read_timeout_s": (int, float),
        "write_timeout_s": (int, float), "idle_timeout_s": (int, float), "upstream_timeout_s": (int, float),
        "drain_s": (int, float), "token_input": str, "balance": str, "metrics": bool, "metrics_auth": bool,
        "scrape_timeout_s": (int, float), "status_file": str, "log_format": str, "generation": int,
        "retire_s": (int, float)}
_LISTENER = {"host": str, "port": int, "routes": str}
_MODEL = {"name": str, "kind": str, "upstream": str, "aliases": list, "max_client_batch_size": int, "default": bool,
          "prompts": dict, "matryoshka_dimensions": list, "replicas": list}
_REQUIRED = {"top": ("listen", "models"), "listener": ("host", "port"), "model": ("name", "kind", "upstream")}


def _fields_problems(where: str, data: object, types: dict[str, Any], required: tuple[str, ...]) -> list[str]:
    if not isinstance(data, dict):
        return [f"{where}: expected an object"]
    problems = [f"{where}: unknown key {key!r}" for key in data if key not in types]
    problems += [f"{where}: missing {key!r}" for key in required if key not in data]
    for key, value in data.items():
        expected = types.get(key)
        if expected is not None and not _typed(value, expected):
            problems.append(f"{where}.{key}: wrong type {type(value).__name__}")
    return problems


def _typed(value: object, expected: Any) -> bool:
    """JSON's types: true is not a number here, though Python's bool is an int."""
    allowed = expected if isinstance(expected, tuple) else (expected,)
    return isinstance(value, allowed) and (bool in allowed or not isinstance(value, bool))


def _shape_problems(data: object) -> list[str]:
    problems = _fields_problems("config", data, _TOP, _REQUIRED["top"])
    if problems:
        return problems
    assert isinstance(data, dict)
    for i, item in enumerate(data["listen"]):
        problems += _fields_problems(f"listen[{i}]", item, _LISTENER, _REQUIRED["listener"])
    for i, item in enumerate(data["models"]):
        problems += _fields_problems(f"models[{i}]", item, _MODEL, _REQUIRED["model"])
        for key in ("aliases", "replicas"):
            if isinstance(item, dict) and not all(isinstance(a, str) for a in item.get(key, [])):
                problems.append(f"models[{i}].{key}: expected strings")
        if isinstance(item, dict) and not all(isinstance(k, str) and isinstance(v, str)
                                              for k, v in dict(item.get("prompts") or {}).items()):
            problems.append(f"models[{i}].prompts: expected strings")
        if isinstance(item, dict) and not all(_typed(d, int) and d > 0 for d in item.get("matryoshka_dimensions", [])):
            problems.append(f"models[{i}].matryoshka_dimensions: expected positive integers")
    return problems


# Meaning: the records, once built -------------------------------------------------------------

def validate(config: GatewayConfig) -> list[str]:
    """Every problem of ``config`` (empty when it is usable)."""
    problems = _listener_problems(config.listen) + _model_problems(config.models)
    if config.wait_s < 0:
        problems.append("wait_s: must be >= 0")
    if config.workers < 1:
        problems.append("workers: must be >= 1")
    if config.max_body_bytes < 1:
        problems.append("max_body_bytes: must be >= 1")
    if config.max_inputs < 1:
        problems.append("max_inputs: must be >= 1")
    for name in ("read_timeout_s", "write_timeout_s", "idle_timeout_s", "upstream_timeout_s", "scrape_timeout_s"):
        if getattr(config, name) <= 0:
            problems.append(f"{name}: must be > 0")
    if config.drain_s < 0:
        problems.append("drain_s: must be >= 0")
    if config.retire_s < 0:
        problems.append("retire_s: must be >= 0")
    if config.token_input not in TOKEN_POLICIES:
        problems.append(f"token_input: {config.token_input!r} is not one of {', '.join(TOKEN_POLICIES)}")
    if config.balance not in BALANCES:
        problems.append(f"balance: {config.balance!r} is not one of {', '.join(BALANCES)}")
    if config.log_format not in LOG_FORMATS:
        problems.append(f"log_format: {config.log_format!r} is not one of {', '.join(LOG_FORMATS)}")
    return problems


def _listener_problems(listen: tuple[Listener, ...]) -> list[str]:
    problems = [] if listen else ["listen: at least one listener is needed"]
    for i, item in enumerate(listen):
        if not item.host:
            problems.append(f"listen[{i}].host: empty")
        if not 0 < item.port < 65536:
            problems.append(f"listen[{i}].port: {item.port} is not a TCP port")
        if item.routes not in ROUTE_SETS:
            problems.append(f"listen[{i}].routes: {item.routes!r} is not one of {', '.join(ROUTE_SETS)}")
    seen = [(item.host, item.port) for item in listen]
    if len(set(seen)) != len(seen):
        problems.append("listen: the same host and port twice")
    return problems


def _model_problems(models: tuple[ModelRoute, ...]) -> list[str]:
    problems = [] if models else ["models: at least one model is needed"]
    owners: dict[str, str] = {}
    for i, model in enumerate(models):
        problems += _one_model_problems(f"models[{i}]", model)
        for name in model.names:
            if name in owners:
                problems.append(f"models[{i}]: the name {name!r} is already used by {owners[name]!r}")
            owners.setdefault(name, model.name)
    for kind in KINDS:
        defaults = [m.name for m in models if m.kind == kind and m.default]
        present = any(m.kind == kind for m in models)
        if present and len(defaults) != 1:
            problems.append(f"models: {kind} needs exactly one default, found {len(defaults)}")
    return problems


def _one_model_problems(where: str, model: ModelRoute) -> list[str]:
    problems = []
    if not model.name or not all(model.aliases):
        problems.append(f"{where}: empty name or alias")
    if model.kind not in KINDS:
        problems.append(f"{where}.kind: {model.kind!r} is not one of {', '.join(KINDS)}")
    for key, upstream in (("upstream", model.upstream), *(("replicas", r) for r in model.replicas)):
        url = urlsplit(upstream)
        if url.scheme != "http" or not url.hostname or url.path not in ("", "/"):
            problems.append(f"{where}.{key}: {upstream!r} is not http://host:port")
    if model.replicas and model.replicas[0] != model.upstream:
        problems.append(f"{where}.replicas: the first must be the upstream {model.upstream!r}")
    if len(set(model.upstreams)) != len(model.upstreams):
        problems.append(f"{where}.replicas: the same TEI twice")
    if model.max_client_batch_size < 1:
        problems.append(f"{where}.max_client_batch_size: must be >= 1")
    return problems
