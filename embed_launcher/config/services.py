"""The services to run (pure): one TEI per model, from EMBED_MODEL / RERANK_MODEL lists and the models file.

The first model of each kind is its *default*: it keeps today's names (`embed`, `rerank`; `sparse`
for SPLADE models), takes the per-service variables (EMBED_REVISION, EMBED_MAX_BATCH_TOKENS, ...),
and answers TEI's native routes. Every other model starts from the variables' declared defaults
and takes its own settings from the models file, which also wins for a default model it names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from embed_launcher.config.kinds import MODELS, PORT, REPLICAS, TEXT, WORD
from embed_launcher.config.modelsfile import ModelEntry
from embed_launcher.config.reader import Reader
from embed_launcher.config.variables import EMBED, PREFIXES, PROMETHEUS_OFFSET, RERANK, TUNABLES

SPARSE = "sparse"
KIND_PREFIX = {EMBED: "EMBED_", SPARSE: "EMBED_", RERANK: "RERANK_"}  # sparse models take EMBED_* tuning
KIND_LABEL = {EMBED: "Embeddings", SPARSE: "Sparse embeddings", RERANK: "Reranker"}
BOTH_DISABLED = "At least one service must be enabled. Set EMBED_ENABLED=true and/or RERANK_ENABLED=true."


@dataclass(frozen=True)
class ServiceSettings:
    """One TEI child: a model and how its TEI runs, as the user configured it."""

    name: str  # "embed", "rerank", "sparse" for defaults, e.g. "embed-bge-m3" otherwise: log prefix, status key
    enabled: bool
    model: str  # Hub repo id, e.g. "BAAI/bge-small-en-v1.5"
    port: int  # the public port clients use for this kind (TEI's own port without the gateway)
    # None = variable not set at all; "" = explicitly empty (auth disabled); else the key.
    api_key: str | None
    revision: str | None  # EMBED_REVISION / RERANK_REVISION, or the models file's
    served_model_name: str | None  # None = the repo id
    prometheus_port: int
    # TEI tuning flags as (flag, value) pairs, validated and normalised, in table order; e.g.
    # (("--max-client-batch-size", "512"), ("--auto-truncate", "true")). A flag may repeat
    # (--cors-allow-origin). Unset tunables are absent, so TEI applies its own default.
    tei_args: tuple[tuple[str, str], ...] = ()
    kind: str = EMBED  # embed | sparse | rerank
    default: bool = True  # the default model of its kind
    prompts: tuple[tuple[str, str], ...] = ()  # the models file's Cohere input_type → prompt name (gateway)
    matryoshka_dimensions: tuple[int, ...] = ()  # the models file's (gateway: /v1/models)
    replicas: int = 0  # TEI processes serving this model; 0 = auto (one per usable GPU, 1 on CPU)
    gpus: tuple[str, ...] | None = None  # GPU ids its replicas are pinned to (models file `gpus`)
    allow_vector_change: bool = False  # models file: a reload may change model or revision behind its names

    def tei_arg(self, flag: str) -> str | None:
        """The last value given for one TEI flag (e.g. "--dtype"), or None when unset."""
        values = [value for name, value in self.tei_args if name == flag]
        return values[-1] if values else None

    @property
    def served_name(self) -> str:
        """The name clients ask for: the alias, else the repo id."""
        return self.served_model_name or self.model

    @property
    def label(self) -> str:
        """How messages name this child: "Embeddings", or "Embeddings (BAAI/bge-m3)" for a second model."""
        return KIND_LABEL[self.kind] if self.default else f"{KIND_LABEL[self.kind]} ({self.served_name})"


@dataclass(frozen=True)
class ModelChoice:
    """One model of a kind before its settings are read: where it was named, and its file entry."""

    model: str
    entry: ModelEntry | None


def default_service(r: Reader, name: str, enabled: bool, port: str | None, first: ModelChoice) -> ServiceSettings:
    """A kind's default model, from its per-service variables (and its models-file entry, which wins)."""
    entry = first.entry
    p = PREFIXES[name]
    service_port = r.required(p + "PORT", PORT, port)
    shifted = service_port + PROMETHEUS_OFFSET
    metrics = shifted if shifted <= 65535 else service_port - PROMETHEUS_OFFSET
    if p + "PORT" in r.bad and not r.given(p + "PROMETHEUS_PORT"):
        r.bad.add(p + "PROMETHEUS_PORT")  # derived from a rejected port: do not report clashes
    return ServiceSettings(
        name=name,
        enabled=enabled,
        model=first.model,
        port=service_port,
        api_key=r.values.get(p + "API_KEY"),
        revision=(entry.revision if entry and entry.revision else None) or r.optional(p + "REVISION", WORD),
        served_model_name=(entry.alias if entry else None) or r.optional(p + "SERVED_MODEL_NAME", TEXT),
        prometheus_port=r.required(p + "PROMETHEUS_PORT", PORT, str(metrics)),
        tei_args=tei_args(r, p, enabled, entry),
        kind=name,
        prompts=entry.prompts if entry else (),
        matryoshka_dimensions=entry.matryoshka_dimensions if entry else (),
        replicas=replicas(r, p, entry),
        gpus=entry.gpus if entry else None,
        allow_vector_change=entry.allow_vector_change if entry else False,
    )


def extra_service(
    r: Reader, kind: str, entry: ModelEntry, name: str, door: ServiceSettings, *, default: bool
) -> ServiceSettings:
    """A model beyond its kind's default (or a sparse model): declared defaults plus its file entry."""
    return ServiceSettings(
        name=name,
        enabled=True,
        model=entry.model,
        port=door.port,
        api_key=door.api_key,
        revision=entry.revision,
        served_model_name=entry.alias,
        prometheus_port=door.prometheus_port,
        tei_args=tei_args(r, KIND_PREFIX[kind], True, entry, declared_only=True),
        kind=kind,
        default=default,
        prompts=entry.prompts,
        matryoshka_dimensions=entry.matryoshka_dimensions,
        replicas=replicas(r, KIND_PREFIX[kind], entry),
        gpus=entry.gpus,
        allow_vector_change=entry.allow_vector_change,
    )


def replicas(r: Reader, prefix: str, entry: ModelEntry | None) -> int:
    """The models file's `replicas`, else EMBED_REPLICAS / RERANK_REPLICAS (0 = auto)."""
    if entry is not None and entry.replicas is not None:
        return entry.replicas
    return r.required(prefix + "REPLICAS", REPLICAS)


def tei_args(
    r: Reader, prefix: str, enabled: bool, entry: ModelEntry | None, *, declared_only: bool = False
) -> tuple[tuple[str, str], ...]:
    """(flag, value) pairs in table order: the variables (or only their declared defaults), then the file's."""
    own = dict(entry.tunables) if entry is not None else {}
    if entry is not None and entry.kind == SPARSE and "POOLING" not in own:
        own["POOLING"] = "splade"  # TEI serves /embed_sparse only with SPLADE pooling
    pairs = []
    for t in TUNABLES:
        if t.suffix in own:
            values = t.kind.parse(own[t.suffix]) or ()
        elif declared_only:
            declared = t.embed_default if prefix == "EMBED_" else t.rerank_default
            values = t.kind.parse(declared) or () if declared else ()
        else:
            values = r.optional(prefix + t.suffix, t.kind) or ()
        pairs += [(t.flag, v) for v in values]
    flags = dict(pairs)
    batch, permits = flags.get("--max-client-batch-size"), flags.get("--max-concurrent-requests")
    if enabled and batch and permits and int(batch) > int(permits):
        r.warnings.append(f"{prefix}MAX_CLIENT_BATCH_SIZE ({batch}) exceeds {prefix}MAX_CONCURRENT_"
                          f"REQUESTS ({permits}): TEI counts one permit per input, so full batches "
                          "will be refused as overloaded")
    return tuple(pairs)


def models_of_kind(r: Reader, kind: str, entries: tuple[ModelEntry, ...]) -> list[ModelChoice]:
    """The models of one kind in order: the variable's list (when given), then the file's others.

    With the variable unset, the file's models of that kind replace its built-in default. Never
    empty for embed and rerank (their variable has a default); the first is the default model.
    """
    by_model = {e.model: e for e in entries if e.kind == kind}
    variable = PREFIXES[kind] + "MODEL" if kind in PREFIXES else None
    if variable is not None and (r.given(variable) or not by_model):
        listed = r.required(variable, MODELS)
        extra = [m for m in by_model if m not in listed]
        return [ModelChoice(m, by_model.get(m)) for m in (*listed, *extra)]
    return [ModelChoice(m, e) for m, e in by_model.items()]


def child_name(kind: str, served: str, taken: set[str]) -> str:
    """A readable, unique child name for a non-default model: "embed-bge-m3"."""
    slug = re.sub(r"[^a-z0-9.]+", "-", served.rsplit("/", 1)[-1].lower()).strip("-.") or "model"
    name, n = f"{kind}-{slug}", 2
    while name in taken:
        name, n = f"{kind}-{slug}-{n}", n + 1
    taken.add(name)
    return name


def check_ports(r: Reader, embed: ServiceSettings, rerank: ServiceSettings) -> None:
    """Cross-variable port rules: one service enabled, no two enabled listeners on one port."""
    if not (embed.enabled or rerank.enabled):
        r.problems.append(BOTH_DISABLED)
        return
    ports = [(PREFIXES[s.name] + suffix, port) for s in (embed, rerank) if s.enabled
             for suffix, port in (("PORT", s.port), ("PROMETHEUS_PORT", s.prometheus_port))]
    same = embed.enabled and rerank.enabled and embed.port == rerank.port
    if same and not r.given("EMBED_PROMETHEUS_PORT"):
        r.bad.add("EMBED_PROMETHEUS_PORT")  # a clash of the service ports, reported already
    ports = [(name, port) for name, port in ports if name not in r.bad]
    for i, (a, port_a) in enumerate(ports):
        for b, port_b in ports[i + 1 :]:
            if port_a == port_b:
                r.problems.append(_clash(r, a, b, port_a))


def _clash(r: Reader, a: str, b: str, port: int) -> str:
    """The message for two listeners on one port, naming the variable to change."""
    if {a, b} == {"EMBED_PORT", "RERANK_PORT"}:
        return f"{a} and {b} cannot be the same (both set to {port}). Use different ports."
    fix = b if "PROMETHEUS" in b else a
    source = fix.removesuffix("PROMETHEUS_PORT") + "PORT"
    derived = "" if r.given(fix) else f" (its default follows {source})"
    return (f"{a} and {b} cannot be the same (both {port}): TEI binds the Prometheus port at "
            f"start. Set {fix} to a free port{derived}.")


def check_served_names(r: Reader, services: list[ServiceSettings]) -> None:
    """Clients pick a model by its served name: no two models may answer to the same one."""
    seen: dict[str, ServiceSettings] = {}
    for s in services:
        other = seen.get(s.served_name)
        if other is not None:
            r.problems.append(
                f"EMBED_MODELS_FILE: two models are served as '{s.served_name}' ({other.model} and {s.model});"
                " give one an alias of its own"
            )
        seen[s.served_name] = s
