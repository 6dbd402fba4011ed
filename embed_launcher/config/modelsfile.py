"""The models file (EMBED_MODELS_FILE) as data (pure): the models to serve, with per-model settings.

    [[models]]
    model = "BAAI/bge-m3"        # Hub id (required)
    alias = "bge-m3"             # the name clients ask for (served name); default: the Hub id
    kind = "embed"               # embed (default), sparse (SPLADE, /embed_sparse) or rerank
    revision = "main"            # branch, tag or commit
    replicas = 2                 # TEI processes for this model: a count or "auto" (one per GPU; 1 on CPU)
    gpus = [0, 2]                # pin its replicas to these GPUs (ids as in EMBED_GPUS)
    max_client_batch_size = 256  # any TEI tuning variable, by its name after EMBED_/RERANK_, in lower case
    prompts = { search_query = "query", search_document = "passage" }  # Cohere input_type → prompt name
    matryoshka_dimensions = [768, 512, 256]  # the sizes the model was trained to be cut to (/v1/models)
    allow_vector_change = true   # a reload may change model or revision behind this name (stored vectors break)

Every problem is reported at once, each naming the file and the key, like the env file's.
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass
from pathlib import Path

from embed_launcher.config.kinds import GPUS, MODEL, REPLICAS, WORD
from embed_launcher.config.variables import TUNABLES

KINDS = ("embed", "sparse", "rerank")
IDENTITY_KEYS = ("model", "alias", "kind", "revision", "replicas", "gpus")
GATEWAY_KEYS = ("prompts", "matryoshka_dimensions")  # read by the gateway, not TEI
RELOAD_KEYS = ("allow_vector_change",)  # read by a reload's vector-space guard, not TEI
INPUT_TYPES = ("search_query", "search_document", "classification", "clustering")  # Cohere's input_type
TUNABLE_KEYS = {t.suffix.lower(): t for t in TUNABLES}


@dataclass(frozen=True)
class ModelEntry:
    """One [[models]] table, checked."""

    model: str
    kind: str
    alias: str | None = None
    revision: str | None = None
    tunables: tuple[tuple[str, str], ...] = ()  # (variable suffix, raw value), e.g. ("DTYPE", "float16")
    prompts: tuple[tuple[str, str], ...] = ()  # (Cohere input_type, the model's prompt name)
    matryoshka_dimensions: tuple[int, ...] = ()
    replicas: int | None = None  # None: EMBED_/RERANK_REPLICAS; 0: auto; else a count
    gpus: tuple[str, ...] | None = None  # pinned GPU ids; None: any usable GPU
    allow_vector_change: bool = False  # a reload may change model or revision behind this entry's names


def parse_models_file(text: str, path: Path) -> tuple[tuple[ModelEntry, ...], list[str]]:
    """(entries in file order, problems). Problems name the file and the key."""
    where = f"EMBED_MODELS_FILE {path}"
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return (), [f"{where}: not valid TOML ({exc})"]
    problems = [f"{where}: unknown table or key '{key}' (expected [[models]] tables)"
                for key in document if key != "models"]  # fmt: skip
    tables = document.get("models", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        return (), [*problems, f"{where}: 'models' must be an array of tables ([[models]])"]
    if not tables:
        problems.append(f"{where}: declares no models (add a [[models]] table with model = \"org/name\")")
    entries = []
    for number, table in enumerate(tables, start=1):
        entry = _entry(table, f"{where}: models[{number}]", problems)
        if entry is not None:
            entries.append(entry)
    seen: set[tuple[str, str]] = set()
    for entry in entries:
        if (entry.kind, entry.model) in seen:
            problems.append(f"{where}: model '{entry.model}' is declared twice as {entry.kind}")
        seen.add((entry.kind, entry.model))
    return tuple(entries), problems


def _entry(table: dict[str, object], where: str, problems: list[str]) -> ModelEntry | None:
    """One table: identity keys checked, tuning keys parsed by their variable's kind."""
    before = len(problems)
    model = _text(table.get("model"))
    if model is None:
        problems.append(f"{where}: 'model' is missing (the Hub id, e.g. model = \"BAAI/bge-m3\")")
    elif MODEL.parse(model) is None:
        problems.append(f"{where}.model must be {MODEL.rule}; got '{model}'")
    kind = _text(table.get("kind", "embed"))
    if kind not in KINDS:
        problems.append(f"{where}.kind must be one of {', '.join(KINDS)}; got '{table.get('kind')}'")
    alias, revision = _text(table.get("alias")), _text(table.get("revision"))
    for key, value in (("alias", alias), ("revision", revision)):
        if key in table and (value is None or WORD.parse(value) is None or not value):
            problems.append(f"{where}.{key} must be a text without spaces; got {table[key]!r}")
    prompts, dimensions = _prompts(table.get("prompts", {}), where, problems), _sizes(table, where, problems)
    replicas, gpus = _placement(table, where, problems)
    allow = table.get("allow_vector_change", False)
    if not isinstance(allow, bool):
        problems.append(f"{where}.allow_vector_change must be true or false; got {allow!r}")
    tunables = []
    for key, raw in table.items():
        if key in IDENTITY_KEYS or key in GATEWAY_KEYS or key in RELOAD_KEYS:
            continue
        tunable = TUNABLE_KEYS.get(key)
        if tunable is None:
            near = difflib.get_close_matches(key, [*IDENTITY_KEYS, *GATEWAY_KEYS, *RELOAD_KEYS, *TUNABLE_KEYS], n=1)
            hint = f"; did you mean {near[0]}?" if near else ""
            problems.append(f"{where}: unknown key '{key}'{hint}")
            continue
        value = _text(raw)
        if value is None or tunable.kind.parse(value) is None:
            problems.append(f"{where}.{key} must be {tunable.kind.rule}; got {raw!r}")
            continue
        tunables.append((tunable.suffix, value))
    if len(problems) > before or model is None or kind is None:
        return None
    return ModelEntry(model, kind, alias, revision, tuple(tunables), prompts, dimensions, replicas, gpus,
                      allow_vector_change=allow is True)


def _prompts(raw: object, where: str, problems: list[str]) -> tuple[tuple[str, str], ...]:
    """`prompts = { search_query = "query", … }`: Cohere's input types to the model's prompt names."""
    if not isinstance(raw, dict) or not all(isinstance(v, str) and v.strip() for v in raw.values()):
        problems.append(f"{where}.prompts must be a table of prompt names, e.g. "
                        "prompts = { search_query = \"query\", search_document = \"passage\" }")
        return ()
    unknown = [k for k in raw if k not in INPUT_TYPES]
    if unknown:
        problems.append(f"{where}.prompts: unknown input type '{unknown[0]}' (expected {', '.join(INPUT_TYPES)})")
    return tuple((k, str(v).strip()) for k, v in raw.items() if k in INPUT_TYPES)


def _sizes(table: dict[str, object], where: str, problems: list[str]) -> tuple[int, ...]:
    raw = table.get("matryoshka_dimensions", [])
    if not isinstance(raw, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in raw):
        problems.append(f"{where}.matryoshka_dimensions must be a list of positive integers, e.g. [768, 512, 256]")
        return ()
    return tuple(int(d) for d in raw)


def _placement(table: dict[str, object], where: str, problems: list[str]) -> tuple[int | None, tuple[str, ...] | None]:
    """`replicas` (a count or "auto") and `gpus` (a list of GPU indices or UUIDs)."""
    replicas = gpus = None
    if "replicas" in table:
        raw = table["replicas"]
        replicas = REPLICAS.parse(_text(raw) or "") if not isinstance(raw, bool) else None
        if replicas is None:
            problems.append(f"{where}.replicas must be {REPLICAS.rule}; got {raw!r}")
    if "gpus" in table:
        raw = table["gpus"]
        items = [_text(i) for i in raw] if isinstance(raw, list) and not any(isinstance(i, bool) for i in raw) else []
        gpus = GPUS.parse(",".join(i or "?" for i in items)) if items else None
        if gpus is None:
            problems.append(f"{where}.gpus must be a list of GPU indices or UUIDs, each once, e.g. [0, 2];"
                            f" got {raw!r}")
    return replicas, gpus


def _text(value: object) -> str | None:
    """TOML strings, integers and booleans as the env file would spell them; anything else None."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | str):
        return str(value).strip()
    return None
