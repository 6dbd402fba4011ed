"""Every configuration variable, declared once: the loader, embed.env.example and the README read these (pure)."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

from embed_launcher.config.kinds import ARG_BOOL, ARG_COUNT, ARG_DTYPE, ARG_ORIGINS, ARG_POOLING, ARG_TEXT, Kind

EMBED = "embed"
RERANK = "rerank"
ENV_FILE_DEFAULT = Path("/embed.env")
DATA_DIR_DEFAULT = Path("/var/lib/embeddings")
KEYS_FILE_DEFAULT = "keys.toml"  # in the data directory, when EMBED_API_KEYS_FILE is not set
STATUS_FILE = ".status.json"  # in the data directory: the live status (embed_manage --status, the gateway's /metrics)
PREFIXES = {EMBED: "EMBED_", RERANK: "RERANK_"}
PROMETHEUS_OFFSET = 10000  # default Prometheus port = service port + this (or minus, past 65535)


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


_SVC, _GW, _NET, _RUN, _SUP = "Services", "Gateway", "Network", "Launcher", "Supervision"
_PROMETHEUS = ("With EMBED_GATEWAY=false: the port of GET /metrics with every family, labelled (TEI itself holds"
               " the public port); behind the gateway unused (/metrics is on the public ports)")
VARIABLES: tuple[Variable, ...] = (
    Variable("EMBED_ENABLED", "true", "Serve text embeddings", _SVC),
    Variable("EMBED_MODEL", "BAAI/bge-small-en-v1.5",
             "Hub model id for embeddings; a comma-separated list serves several (the first is the default)",
             _SVC),
    Variable("EMBED_PORT", "8000", "Embeddings HTTP port", _SVC),
    Variable("EMBED_API_KEY", "", "Embeddings API key; set but empty disables auth", _SVC,
             note="the saved key, or a new one on a fresh volume", example="your-secret-key"),
    Variable("RERANK_ENABLED", "false", "Serve reranking", _SVC),
    Variable("RERANK_MODEL", "BAAI/bge-reranker-v2-m3",
             "Hub model id for reranking; a comma-separated list serves several (the first is the default)",
             _SVC),
    Variable("RERANK_PORT", "8001", "Reranking HTTP port", _SVC,
             note="8000 when embeddings are disabled"),
    Variable("RERANK_API_KEY", "", "Reranking API key; set but empty disables auth", _SVC,
             note="the embeddings key", example="your-secret-key"),
    Variable("EMBED_HF_TOKEN", "", "Hugging Face token for gated or private models", _SVC,
             example="hf_xxx"),
    Variable("EMBED_LOCAL_ONLY", "false", "Never contact the Hub; serve only models pulled already",
             _SVC),
    Variable("EMBED_MODELS_FILE", "",
             "TOML file declaring models with per-model settings: alias, kind (embed, sparse, rerank),"
             " revision, TEI tuning", _SVC, example="/etc/embed-launcher/models.toml"),
    Variable("EMBED_REPLICAS", "auto",
             "TEI processes per embeddings model: auto (one per GPU; 1 on CPU) or a count; more than 1 needs"
             " the gateway", _SVC),
    Variable("RERANK_REPLICAS", "auto",
             "TEI processes per reranking model: auto (one per GPU; 1 on CPU) or a count", _SVC),
    Variable("EMBED_GPUS", "",
             "GPUs the launcher may use, comma-separated indices or UUIDs", _SVC,
             note="CUDA_VISIBLE_DEVICES, else every GPU nvidia-smi -L lists", example="0,1"),
    Variable("EMBED_GATEWAY", "auto",
             "One gateway in front of every model, speaking every client's dialect: auto (on; the default),"
             " true, or false (TEI itself on the public ports: no Cohere, Ollama or /v1/rerank routes, no keys"
             " file, one model a port)",
             _GW),
    Variable("EMBED_GATEWAY_BALANCE", "least-inputs",
             "How a model's replicas share requests: least-inputs (fewest inputs in flight) or round-robin",
             _GW),
    Variable("EMBED_API_KEYS_FILE", "",
             "TOML file of API keys ([[keys]]: id, sha256, scopes, models, expires, rpm), watched by the gateway:"
             " a change applies from the next request on; setting it turns the gateway on", _GW,
             note="<data dir>/keys.toml, where embed_manage --addkey writes", example="/etc/embed-launcher/keys.toml"),
    Variable("EMBED_GATEWAY_WAIT", "30",
             "Seconds a request waits for its model's TEI while that TEI starts or restarts", _GW),
    Variable("EMBED_GATEWAY_WORKERS", "1", "Gateway processes sharing the public ports (SO_REUSEPORT)",
             _GW),
    Variable("EMBED_GATEWAY_ACCESS_LOG", "false", "Log one line per request through the gateway", _GW),
    Variable("EMBED_METRICS_AUTH", "false",
             "The gateway's /metrics needs a key with the metrics scope (the default key has it); false: public,"
             " as TEI's", _GW),
    Variable("EMBED_GATEWAY_MAX_INPUTS", "8192",
             "Most inputs in one request through the gateway (it cuts them into the model's batches); more: 422",
             _GW),
    Variable("EMBED_TOKEN_INPUT", "reject",
             "Token ids on the gateway's OpenAI routes: reject (a 400 explaining the fix), decode (tiktoken's"
             " cl100k_base ids to text; needs the [tiktoken] extra) or passthrough (the model's own ids)", _GW),
    Variable("EMBED_GATEWAY_READ_TIMEOUT", "60",
             "Seconds a client has to send a request's headers and body to the gateway", _GW),
    Variable("EMBED_GATEWAY_UPSTREAM_TIMEOUT", "600",
             "Seconds the gateway gives one request to a TEI, answer included, before it answers 504", _GW),
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
    Variable("EMBED_LOG_FORMAT", "text",
             "Log lines: text, or json (one JSON object per line: the launcher's, the gateway's access log and"
             " its own lines; TEI gets --json-output)", _RUN),
    Variable("EMBED_READY_TIMEOUT", "600", "Seconds a TEI start may take to answer /health", _SUP),
    Variable("EMBED_STOP_TIMEOUT", "8", "Seconds to wait for a graceful stop before SIGKILL", _SUP),
    Variable("EMBED_RESTART_DELAY", "1", "Seconds before restarting a crashed child, doubling",
             _SUP),
    Variable("EMBED_RESTART_MAX_DELAY", "60", "Longest restart delay in seconds", _SUP),
    Variable("EMBED_START_RETRIES", "5", "Failed starts in a row before giving up (exit 1)", _SUP),
    Variable("EMBED_HEALTH_INTERVAL", "10", "Seconds between liveness probes once ready", _SUP),
    Variable("EMBED_HEALTH_FAILURES", "3", "Failed liveness probes in a row, then restart", _SUP),
    Variable("EMBED_HANG_TIMEOUT", "600",
             "Seconds /health may stay unanswered with no work completing before a TEI counts as hung"
             " and is replaced (a busy TEI is never replaced)", _SUP),
    Variable("EMBED_DRAIN_TIMEOUT", "30",
             "Seconds a reload lets the replaced TEIs finish their requests in flight before stopping them",
             _SUP),
    Variable("EMBED_BACKOFF_RESET_AFTER", "60",
             "Seconds a TEI must have been ready for its crash to be restarted at EMBED_RESTART_DELAY"
             " again, not after a longer backoff", _SUP),
    *_service_variables(EMBED, "Embeddings"),
    *_service_variables(RERANK, "Reranking"),
)


def _default_text(v: Variable) -> str:
    """The default as shown to users: the literal value, a note on how it varies, or unset."""
    if v.default and v.note:
        return f"{v.default} ({v.note})"
    return v.default or v.note or "unset"


def render_env_example() -> str:
    """embed.env.example: every variable commented out, with its meaning and default."""
    lines = [
        "# embed-launcher configuration. Generated from embed_launcher/config/variables.py; do not edit.",
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
