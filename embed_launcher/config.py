"""Configuration: read the environment and the env file, validate, return frozen Settings (pure)."""

from __future__ import annotations

import difflib
import io
import ipaddress
import re
import textwrap
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Generic, TypeVar

from .errors import ConfigError

EMBED = "embed"
RERANK = "rerank"

ENV_FILE_DEFAULT = Path("/embed.env")
DATA_DIR_DEFAULT = Path("/var/lib/embeddings")
PREFIXES = {EMBED: "EMBED_", RERANK: "RERANK_"}
_PREFIXES = tuple(PREFIXES.values())
PROMETHEUS_OFFSET = 10000  # default Prometheus port = service port + this (or minus, past 65535)
# The original's telemetry switches: accepted without a warning, since we send no usage counts.
IGNORED_VARIABLES = frozenset({"EMBED_DISABLE_USAGE_COUNTS", "EMBED_USAGE_BASE_URL"})
BOTH_DISABLED = (
    "At least one service must be enabled. Set EMBED_ENABLED=true and/or RERANK_ENABLED=true."
)
MAX_SECONDS = 365 * 24 * 3600.0
T = TypeVar("T")


@dataclass(frozen=True)
class ServiceSettings:
    """One TEI service (embeddings or reranking) as the user configured it."""

    name: str  # EMBED or RERANK; also the log prefix "[embed]" / "[rerank]"
    enabled: bool
    model: str  # Hub repo id, e.g. "BAAI/bge-small-en-v1.5"
    port: int
    # None = variable not set at all; "" = explicitly empty (auth disabled); else the key.
    api_key: str | None
    revision: str | None  # EMBED_REVISION / RERANK_REVISION
    served_model_name: str | None  # None = the repo id
    prometheus_port: int
    # TEI tuning flags as (flag, value) pairs, validated and normalised, in table order; e.g.
    # (("--max-client-batch-size", "512"), ("--auto-truncate", "true")). A flag may repeat
    # (--cors-allow-origin). Unset tunables are absent, so TEI applies its own default.
    tei_args: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Settings:
    """Everything the launcher and embed_manage need, validated."""

    data_dir: Path
    env_file: Path
    tei_bin: str | None  # EMBED_TEI_BIN as given (path or command name); None = look on PATH
    host: str  # bind address, an IP literal; default "0.0.0.0"
    server_addr: str | None  # advertised address; None = look it up (unless local-only)
    hf_token: str | None
    local_only: bool
    backend: str  # "auto" | "onnx" | "candle": which weights TEI will load (EMBED_BACKEND)
    data_persistent: bool | None  # EMBED_DATA_PERSISTENT; None = detect (bare metal, or a mounted volume)
    ready_timeout_s: float  # per start attempt, from spawn to /health 200
    stop_timeout_s: float  # graceful stop before SIGKILL
    restart_delay_s: float  # first restart backoff, doubles each time
    restart_max_delay_s: float
    start_retries: int  # consecutive start failures before giving up (exit 1)
    health_interval_s: float  # liveness probe period once ready
    health_failures: int  # consecutive liveness failures before a restart
    embed: ServiceSettings
    rerank: ServiceSettings
    warnings: tuple[str, ...] = ()  # non-fatal notes found while loading (unknown keys...)

    @property
    def services(self) -> tuple[ServiceSettings, ...]:
        """The enabled services, embeddings first."""
        return tuple(s for s in (self.embed, self.rerank) if s.enabled)


# ---- value kinds: a parser (None = invalid) and the rule quoted in the problem message ----


@dataclass(frozen=True)
class Kind(Generic[T]):
    """How one kind of value is parsed, and what the error message says is allowed."""

    parse: Callable[[str], T | None]
    rule: str


_BOOLEANS = {"true": True, "1": True, "yes": True, "on": True,
             "false": False, "0": False, "no": False, "off": False}
_DIGITS = re.compile(r"[0-9]{1,18}")  # longer is absurd here, and int() of 4300+ digits raises
_SECONDS = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*s?", re.IGNORECASE)
_NAME_PART = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"
_MODEL_ID = re.compile(rf"(?:{_NAME_PART}/)?{_NAME_PART}")
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*\.?")


def _count(raw: str) -> int | None:
    return int(raw) if _DIGITS.fullmatch(raw) and int(raw) >= 1 else None


def _port(raw: str) -> int | None:
    return int(raw) if _DIGITS.fullmatch(raw) and 1 <= int(raw) <= 65535 else None


def _seconds(raw: str) -> float | None:
    match = _SECONDS.fullmatch(raw)
    # Bounded so that waits stay within what threading and selectors accept.
    return float(match.group(1)) if match and 0 < float(match.group(1)) <= MAX_SECONDS else None


def _ip(raw: str) -> str | None:
    bare = raw[1:-1] if raw.startswith("[") and raw.endswith("]") else raw
    if "%" in bare:  # scoped IPv6: Python parses it, TEI does not
        return None
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        return None


def _host(raw: str) -> str | None:
    return "127.0.0.1" if raw.lower() == "localhost" else _ip(raw)


def _server_addr(raw: str) -> str | None:
    if (ip := _ip(raw)) is not None:
        return ip
    numeric = re.fullmatch(r"[0-9.]+", raw)  # looks like an IPv4 address but is not one
    return raw if _HOSTNAME.fullmatch(raw) and not numeric else None


def _model(raw: str) -> str | None:
    return raw if _MODEL_ID.fullmatch(raw) and ".." not in raw and "--" not in raw else None


def _choice(*allowed: str, **aliases: str) -> Kind[str]:
    table = {a: a for a in allowed} | aliases
    return Kind(lambda raw: table.get(raw.lower()), "one of " + ", ".join(allowed))


def _origins(raw: str) -> tuple[str, ...] | None:
    origins = tuple(o.strip() for o in raw.split(",") if o.strip())
    return origins if origins and not any(re.search(r"\s", o) for o in origins) else None


def _one(parse: Callable[[str], object | None]) -> Callable[[str], tuple[str, ...] | None]:
    """Adapt a scalar parser to a TEI argument: one value, rendered as TEI spells it."""

    def to_args(raw: str) -> tuple[str, ...] | None:
        value = parse(raw)
        if value is None:
            return None
        return (str(value).lower() if isinstance(value, bool) else str(value),)

    return to_args


BOOL = Kind(lambda raw: _BOOLEANS.get(raw.lower()), "true or false (also 1/0, yes/no, on/off)")
PORT = Kind(_port, "an integer between 1 and 65535")
COUNT = Kind(_count, "a whole number of at least 1")
SECONDS = Kind(_seconds, "a positive number of seconds (at most a year), e.g. 10 or 0.5s")
HOST = Kind(_host, "an IP address such as 0.0.0.0, 127.0.0.1 or :: (or localhost), not a name")
SERVER_ADDR = Kind(_server_addr, "a host name or IP address without scheme, port or spaces")
MODEL = Kind(_model, "a Hugging Face model id like BAAI/bge-small-en-v1.5 (org/name, no spaces)")
TEXT = Kind(lambda raw: raw, "any text")
WORD = Kind(lambda raw: None if re.search(r"\s", raw) else raw, "a value without spaces")
BACKEND = _choice("auto", "onnx", "candle")
PERSISTENCE = Kind(
    lambda raw: "auto" if raw.lower() == "auto" else _BOOLEANS.get(raw.lower()),
    "auto, or true or false (also 1/0, yes/no, on/off)",
)
ARG_COUNT = Kind(_one(_count), COUNT.rule)
ARG_BOOL = Kind(_one(BOOL.parse), BOOL.rule)
DTYPE = _choice("float16", "float32", "bfloat16")
ARG_DTYPE = Kind(_one(DTYPE.parse), DTYPE.rule)
POOLING = _choice("cls", "mean", "splade", "last-token", last_token="last-token")
ARG_POOLING = Kind(_one(POOLING.parse), POOLING.rule)
ARG_ORIGINS = Kind(_origins, "a comma-separated list of origins, e.g. https://app.example.com")
ARG_TEXT = Kind(_one(TEXT.parse), TEXT.rule)


# ---- declarations: every variable once; the loader and the docs both read these ----


@dataclass(frozen=True)
class Variable:
    """One variable as users see it; embed.env.example and the README table come from these."""

    name: str
    default: str  # the literal default ("" = unset)
    meaning: str  # one line, no "|"
    group: str
    note: str = ""  # how the default varies, e.g. "8000 when embeddings are disabled"
    example: str = ""  # shown in embed.env.example when there is no literal default


@dataclass(frozen=True)
class Tunable:
    """One TEI flag exposed per service as EMBED_<suffix> and RERANK_<suffix>."""

    suffix: str
    flag: str
    kind: Kind[tuple[str, ...]]
    embed_default: str  # "" = unset: the flag is not passed and TEI's own default applies
    rerank_default: str
    meaning: str


TUNABLES: tuple[Tunable, ...] = (
    Tunable("MAX_CLIENT_BATCH_SIZE", "--max-client-batch-size", ARG_COUNT, "512", "512",
            "Most inputs (texts, or documents to rerank) per request; TEI's own 32 is too few"),
    Tunable("MAX_BATCH_TOKENS", "--max-batch-tokens", ARG_COUNT, "", "",
            "Most tokens in one model batch (TEI default 16384)"),
    Tunable("MAX_CONCURRENT_REQUESTS", "--max-concurrent-requests", ARG_COUNT, "2048", "2048",
            "Most inputs in flight: TEI counts one per input, so keep it above the batch size"),
    Tunable("MAX_BATCH_REQUESTS", "--max-batch-requests", ARG_COUNT, "", "",
            "Most requests in one model batch (TEI default: no limit)"),
    Tunable("PAYLOAD_LIMIT", "--payload-limit", ARG_COUNT, "10000000", "10000000",
            "Largest request body in bytes (TEI's own is 2000000)"),
    Tunable("AUTO_TRUNCATE", "--auto-truncate", ARG_BOOL, "", "",
            "Truncate over-long inputs instead of rejecting them (TEI default: true since 1.9)"),
    Tunable("DTYPE", "--dtype", ARG_DTYPE, "", "",
            "float16, float32 or bfloat16 (TEI default: float32 on CPU, float16 on GPU)"),
    Tunable("POOLING", "--pooling", ARG_POOLING, "", "",
            "cls, mean, splade or last-token (TEI default: from the model's config)"),
    Tunable("TOKENIZATION_WORKERS", "--tokenization-workers", ARG_COUNT, "", "",
            "Tokenizer threads (TEI default: CPU cores minus one)"),
    Tunable("CORS_ALLOW_ORIGIN", "--cors-allow-origin", ARG_ORIGINS, "", "",
            "Comma-separated origins allowed by CORS (TEI default: any origin)"),
    Tunable("DEFAULT_PROMPT_NAME", "--default-prompt-name", ARG_TEXT, "", "",
            "Prompt from the model's sentence-transformers config to prepend by default"),
)


def _service_variables(name: str, label: str) -> tuple[Variable, ...]:
    """One service's model revision, served name and TEI tuning variables."""
    p, group = PREFIXES[name], f"{label} (TEI)"
    tuning = (Variable(p + t.suffix, t.embed_default if name == EMBED else t.rerank_default,
                       t.meaning, group) for t in TUNABLES)
    return (
        Variable(p + "REVISION", "", "Model revision (branch, tag or commit) to serve", group,
                 note="main"),
        Variable(p + "SERVED_MODEL_NAME", "", "Model name reported by /info and the OpenAI route",
                 group, note="the model id"),
        *tuning,
    )


_SVC, _NET, _RUN, _SUP = "Services", "Network", "Launcher", "Supervision"
_PROMETHEUS = "Port TEI binds for an instant at start (metrics are served at /metrics)"
VARIABLES: tuple[Variable, ...] = (
    Variable("EMBED_ENABLED", "true", "Serve text embeddings", _SVC),
    Variable("EMBED_MODEL", "BAAI/bge-small-en-v1.5", "Hub model id for embeddings", _SVC),
    Variable("EMBED_PORT", "8000", "Embeddings HTTP port", _SVC),
    Variable("EMBED_API_KEY", "", "Embeddings API key; set but empty disables auth", _SVC,
             note="the saved key, or a new one on a fresh volume", example="your-secret-key"),
    Variable("RERANK_ENABLED", "false", "Serve reranking", _SVC),
    Variable("RERANK_MODEL", "BAAI/bge-reranker-v2-m3", "Hub model id for reranking", _SVC),
    Variable("RERANK_PORT", "8001", "Reranking HTTP port", _SVC,
             note="8000 when embeddings are disabled"),
    Variable("RERANK_API_KEY", "", "Reranking API key; set but empty disables auth", _SVC,
             note="the embeddings key", example="your-secret-key"),
    Variable("EMBED_HF_TOKEN", "", "Hugging Face token for gated or private models", _SVC,
             example="hf_xxx"),
    Variable("EMBED_LOCAL_ONLY", "false", "Never contact the Hub; serve only models pulled already",
             _SVC),
    Variable("EMBED_HOST", "0.0.0.0", "Bind address: an IP address, or localhost for 127.0.0.1",
             _NET),
    Variable("EMBED_SERVER_ADDR", "", "Address shown in banners: host or IP, no scheme or port",
             _NET, note="looked up, except in local-only mode", example="embeddings.example.com"),
    Variable("EMBED_PROMETHEUS_PORT", "", _PROMETHEUS, _NET, note="EMBED_PORT + 10000"),
    Variable("RERANK_PROMETHEUS_PORT", "", _PROMETHEUS, _NET, note="RERANK_PORT + 10000"),
    Variable("EMBED_DATA_DIR", str(DATA_DIR_DEFAULT), "Model cache, API key and state files", _RUN),
    Variable("EMBED_ENV_FILE", str(ENV_FILE_DEFAULT),
             "Env file overriding the environment (only read from the process environment)", _RUN),
    Variable("EMBED_DATA_PERSISTENT", "auto",
             "Whether EMBED_DATA_DIR survives restarts (decides key generation): auto, true or false",
             _RUN, note="auto: bare metal yes; in a container only if a volume is mounted there"),
    Variable("EMBED_TEI_BIN", "", "TEI binary: a path or a command name", _RUN,
             note="text-embeddings-router on PATH"),
    Variable("EMBED_BACKEND", "auto", "Weights TEI loads, so downloads: auto, onnx or candle",
             _RUN),
    Variable("EMBED_READY_TIMEOUT", "600", "Seconds a TEI start may take to answer /health", _SUP),
    Variable("EMBED_STOP_TIMEOUT", "8", "Seconds to wait for a graceful stop before SIGKILL", _SUP),
    Variable("EMBED_RESTART_DELAY", "1", "Seconds before restarting a crashed child, doubling",
             _SUP),
    Variable("EMBED_RESTART_MAX_DELAY", "60", "Longest restart delay in seconds", _SUP),
    Variable("EMBED_START_RETRIES", "5", "Failed starts in a row before giving up (exit 1)", _SUP),
    Variable("EMBED_HEALTH_INTERVAL", "10", "Seconds between liveness probes once ready", _SUP),
    Variable("EMBED_HEALTH_FAILURES", "3", "Failed liveness probes in a row, then restart", _SUP),
    *_service_variables(EMBED, "Embeddings"),
    *_service_variables(RERANK, "Reranking"),
)
_DEFAULTS = {v.name: v.default for v in VARIABLES}
_ORDER = {v.name: i for i, v in enumerate(VARIABLES)}


# ---- loading ----


class _Reader:
    """Typed access to the merged, sanitised values; collects problems instead of raising."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = values
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.bad: set[str] = set()  # variables whose value was rejected (their default is used)

    def given(self, name: str) -> bool:
        """Whether the user set a non-empty value (empty means "use the default")."""
        return bool(self.values.get(name))

    def optional(self, name: str, kind: Kind[T], default: str | None = None) -> T | None:
        """The parsed value, else the parsed default (declared unless given); None if unset."""
        default = _DEFAULTS[name] if default is None else default
        raw = self.values.get(name) or default
        if not raw:
            return None
        value = kind.parse(raw)
        if value is None:
            self.bad.add(name)
            self.problems.append(f"{name} must be {kind.rule}; got '{raw}'.")
            return kind.parse(default) if default else None
        return value

    def required(self, name: str, kind: Kind[T], default: str | None = None) -> T:
        """Like optional() for a variable that always has a (valid) default."""
        value = self.optional(name, kind, default)
        assert value is not None, f"{name} has no valid default"
        return value


def env_file_path(environ: Mapping[str, str]) -> Path:
    """The env file to read: EMBED_ENV_FILE from the process environment, else /embed.env."""
    return Path(_sanitise(environ.get("EMBED_ENV_FILE", "")) or ENV_FILE_DEFAULT)


def _sanitise(value: str) -> str:
    """Trim, then drop one pair of surrounding double quotes, then of single quotes (as run.sh)."""
    value = value.strip()
    for quote in ('"', "'"):
        if len(value) >= 2 and value[0] == value[-1] == quote:
            value = value[1:-1]
    return value


_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _read_env_file(text: str, path: Path) -> tuple[dict[str, str], list[str], list[str]]:
    """Parse env-file text as data: (values, syntax problems, keys in file order)."""
    from dotenv.parser import parse_stream  # lazy: embed_manage imports this module

    values: dict[str, str] = {}
    problems: list[str] = []
    for binding in parse_stream(io.StringIO(text)):
        key, value = binding.key, binding.value
        if key is None and not binding.error:
            continue  # blank line or comment
        if key is not None and value is not None and _KEY.fullmatch(key):
            values[key] = _sanitise(value)
            continue
        # A parse error, a bare word (a command, in shell) or a name the shell would not accept.
        line, shown = _where(binding.original.string, binding.original.line)
        problems.append(f"EMBED_ENV_FILE {path} line {line}: cannot parse '{shown}' "
                        "(expected KEY=value)")
    return values, problems, list(values)


def _where(original: str, line: int) -> tuple[int, str]:
    """The real line number and text of a binding (the parser counts from preceding blank lines)."""
    stripped = original.lstrip()
    skipped = original[: len(original) - len(stripped)]
    return line + len(re.findall(r"\r\n|\r|\n", skipped)), stripped.rstrip()


def _unknown(keys: Iterable[str], where: str) -> list[str]:
    """Warnings for EMBED_*/RERANK_* names we do not know, with the nearest known name."""
    warnings = []
    for key in keys:
        upper = key.upper()
        if key in _DEFAULTS or key in IGNORED_VARIABLES or not upper.startswith(_PREFIXES):
            continue
        near = difflib.get_close_matches(upper, _DEFAULTS, n=1)
        hint = f"; did you mean {near[0]}?" if near else ""
        warnings.append(f"unknown variable {key} in {where} (ignored{hint})")
    return warnings


def load_settings(
    environ: Mapping[str, str], env_file_text: str | None, *, env_file: Path, cwd: Path
) -> Settings:
    """Merge defaults < environment < env file, validate everything, raise ConfigError once."""
    file_values, syntax, file_keys = _read_env_file(env_file_text or "", env_file)
    env_values = {k: _sanitise(v) for k, v in environ.items() if k.startswith(_PREFIXES)}
    reader = _Reader(env_values | file_values)
    settings = _settings(reader, env_file, cwd)
    if syntax or reader.problems:
        raise ConfigError(syntax + sorted(reader.problems, key=_doc_order))
    warnings = _unknown(sorted(environ), "the environment") + _unknown(file_keys, str(env_file))
    if "EMBED_ENV_FILE" in file_values:
        warnings.append(f"EMBED_ENV_FILE in {env_file} has no effect (ignored; set it in the "
                        "process environment)")
    return replace(settings, warnings=tuple(warnings + reader.warnings))


def _auto_or_bool(value: object) -> bool | None:
    """"auto" means: let the launcher detect it."""
    return value if isinstance(value, bool) else None


def _doc_order(problem: str) -> int:
    """Sort key: the documented position of the variable a problem starts with."""
    return _ORDER.get(problem.split()[0], -1)


def _settings(r: _Reader, env_file: Path, cwd: Path) -> Settings:
    """Read every variable (problems accumulate in `r`) into a Settings record."""
    embed_on, rerank_on = r.required("EMBED_ENABLED", BOOL), r.required("RERANK_ENABLED", BOOL)
    embed = _service(r, EMBED, embed_on, None)
    rerank = _service(r, RERANK, rerank_on, None if embed_on else "8000")
    _check_ports(r, embed, rerank)
    delay = r.required("EMBED_RESTART_DELAY", SECONDS)
    max_delay = r.required("EMBED_RESTART_MAX_DELAY", SECONDS)
    if max_delay < delay and not r.bad & {"EMBED_RESTART_DELAY", "EMBED_RESTART_MAX_DELAY"}:
        r.problems.append(f"EMBED_RESTART_MAX_DELAY must be at least EMBED_RESTART_DELAY "
                          f"({delay:g}); got {max_delay:g}.")
    return Settings(
        data_dir=cwd / r.required("EMBED_DATA_DIR", TEXT),  # absolute paths stay as they are
        env_file=env_file,
        tei_bin=r.optional("EMBED_TEI_BIN", TEXT),
        host=r.required("EMBED_HOST", HOST),
        server_addr=r.optional("EMBED_SERVER_ADDR", SERVER_ADDR),
        hf_token=r.optional("EMBED_HF_TOKEN", TEXT),
        local_only=r.required("EMBED_LOCAL_ONLY", BOOL),
        backend=r.required("EMBED_BACKEND", BACKEND),
        data_persistent=_auto_or_bool(r.required("EMBED_DATA_PERSISTENT", PERSISTENCE)),
        ready_timeout_s=r.required("EMBED_READY_TIMEOUT", SECONDS),
        stop_timeout_s=r.required("EMBED_STOP_TIMEOUT", SECONDS),
        restart_delay_s=delay,
        restart_max_delay_s=max_delay,
        start_retries=r.required("EMBED_START_RETRIES", COUNT),
        health_interval_s=r.required("EMBED_HEALTH_INTERVAL", SECONDS),
        health_failures=r.required("EMBED_HEALTH_FAILURES", COUNT),
        embed=embed,
        rerank=rerank,
    )


def _service(r: _Reader, name: str, enabled: bool, port: str | None) -> ServiceSettings:
    """One service's settings; `port` overrides the declared default port."""
    p = PREFIXES[name]
    service_port = r.required(p + "PORT", PORT, port)
    shifted = service_port + PROMETHEUS_OFFSET
    metrics = shifted if shifted <= 65535 else service_port - PROMETHEUS_OFFSET
    if p + "PORT" in r.bad and not r.given(p + "PROMETHEUS_PORT"):
        r.bad.add(p + "PROMETHEUS_PORT")  # derived from a rejected port: do not report clashes
    return ServiceSettings(
        name=name,
        enabled=enabled,
        model=r.required(p + "MODEL", MODEL),
        port=service_port,
        api_key=r.values.get(p + "API_KEY"),
        revision=r.optional(p + "REVISION", WORD),
        served_model_name=r.optional(p + "SERVED_MODEL_NAME", TEXT),
        prometheus_port=r.required(p + "PROMETHEUS_PORT", PORT, str(metrics)),
        tei_args=_tei_args(r, p, enabled),
    )


def _tei_args(r: _Reader, prefix: str, enabled: bool) -> tuple[tuple[str, str], ...]:
    """(flag, value) pairs in table order for every tunable set or defaulted."""
    pairs = [(t.flag, v) for t in TUNABLES for v in r.optional(prefix + t.suffix, t.kind) or ()]
    flags = dict(pairs)
    batch, permits = flags.get("--max-client-batch-size"), flags.get("--max-concurrent-requests")
    if enabled and batch and permits and int(batch) > int(permits):
        r.warnings.append(f"{prefix}MAX_CLIENT_BATCH_SIZE ({batch}) exceeds {prefix}MAX_CONCURRENT_"
                          f"REQUESTS ({permits}): TEI counts one permit per input, so full batches "
                          "will be refused as overloaded")
    return tuple(pairs)


def _check_ports(r: _Reader, embed: ServiceSettings, rerank: ServiceSettings) -> None:
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


def _clash(r: _Reader, a: str, b: str, port: int) -> str:
    """The message for two listeners on one port, naming the variable to change."""
    if {a, b} == {"EMBED_PORT", "RERANK_PORT"}:
        return f"{a} and {b} cannot be the same (both set to {port}). Use different ports."
    fix = b if "PROMETHEUS" in b else a
    source = fix.removesuffix("PROMETHEUS_PORT") + "PORT"
    derived = "" if r.given(fix) else f" (its default follows {source})"
    return (f"{a} and {b} cannot be the same (both {port}): TEI binds the Prometheus port at "
            f"start. Set {fix} to a free port{derived}.")


# ---- documentation rendered from VARIABLES ----


def _default_text(v: Variable) -> str:
    """The default as shown to users: the literal value, a note on how it varies, or unset."""
    if v.default and v.note:
        return f"{v.default} ({v.note})"
    return v.default or v.note or "unset"


def render_env_example() -> str:
    """embed.env.example: every variable commented out, with its meaning and default."""
    lines = [
        "# embed-launcher configuration. Generated from embed_launcher/config.py; do not edit.",
        "# Copy to embed.env and uncomment what you change: one KEY=value per line, no spaces",
        "# around '=', quotes optional. Read as data, never run as a shell script. Its values",
        "# override the process environment (docker -e / --env-file).",
    ]
    group = ""
    for v in VARIABLES:
        if v.group != group:
            group = v.group
            lines += ["", f"# ---- {group} ----"]
        lines += ["", *textwrap.wrap(v.meaning + ".", 96, initial_indent="# ",
                                     subsequent_indent="#   ")]
        if v.note or not v.default:
            lines.append(f"# Default: {_default_text(v)}.")
        lines.append(f"# {v.name}={v.default or v.example}")
    return "\n".join(lines) + "\n"


def render_variable_table() -> str:
    """A Markdown table of every variable, grouped, for the README."""
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    group = ""
    for v in VARIABLES:
        if v.group != group:
            group = v.group
            rows.append(f"| **{group}** | | |")
        default = f"`{v.default}`" if v.default else ""
        note = v.note if not v.default or not v.note else f"({v.note})"
        shown = " ".join(part for part in (default, note) if part) or "unset"
        rows.append(f"| `{v.name}` | {shown} | {v.meaning} |")
    return "\n".join(rows) + "\n"
