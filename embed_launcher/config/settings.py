"""Configuration: read the environment and the env file, validate, return frozen Settings (pure)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from embed_launcher.config.envfile import env_file_path, parse_env_text, sanitise
from embed_launcher.config.kinds import (
    BACKEND,
    BOOL,
    COUNT,
    HOST,
    MODEL,
    PERSISTENCE,
    PORT,
    SECONDS,
    SERVER_ADDR,
    TEXT,
    WORD,
    Kind,
)  # fmt: skip
from embed_launcher.config.variables import (
    DATA_DIR_DEFAULT,
    EMBED,
    ENV_FILE_DEFAULT,
    PREFIXES,
    PROMETHEUS_OFFSET,
    RERANK,
    TUNABLES,
    VARIABLES,
    Tunable,
    Variable,
    render_env_example,
    render_variable_table,
)  # fmt: skip
from embed_launcher.reporting.errors import ConfigError

__all__ = [
    "DATA_DIR_DEFAULT", "EMBED", "ENV_FILE_DEFAULT", "MODEL", "PREFIXES", "RERANK", "TUNABLES", "VARIABLES",
    "ServiceSettings", "Settings", "Tunable", "Variable", "env_file_path", "load_settings",
    "render_env_example", "render_variable_table",
]  # fmt: skip

_PREFIXES = tuple(PREFIXES.values())
# The original's telemetry switches: accepted without a warning, since we send no usage counts.
IGNORED_VARIABLES = frozenset({"EMBED_DISABLE_USAGE_COUNTS", "EMBED_USAGE_BASE_URL"})
BOTH_DISABLED = (
    "At least one service must be enabled. Set EMBED_ENABLED=true and/or RERANK_ENABLED=true."
)
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

    def tei_arg(self, flag: str) -> str | None:
        """The last value given for one TEI flag (e.g. "--dtype"), or None when unset."""
        values = [value for name, value in self.tei_args if name == flag]
        return values[-1] if values else None


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
    hang_timeout_s: float  # /health silent and no work completing this long: hung, replaced
    backoff_reset_after_s: float  # ready this long before dying: restarted at the base delay
    embed: ServiceSettings
    rerank: ServiceSettings
    warnings: tuple[str, ...] = ()  # non-fatal notes found while loading (unknown keys...)

    @property
    def services(self) -> tuple[ServiceSettings, ...]:
        """The enabled services, embeddings first."""
        return tuple(s for s in (self.embed, self.rerank) if s.enabled)


_DEFAULTS = {v.name: v.default for v in VARIABLES}
_ORDER = {v.name: i for i, v in enumerate(VARIABLES)}


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
    file_values, syntax, file_keys = parse_env_text(env_file_text or "", env_file)
    env_values = {k: sanitise(v) for k, v in environ.items() if k.startswith(_PREFIXES)}
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
        hang_timeout_s=r.required("EMBED_HANG_TIMEOUT", SECONDS),
        backoff_reset_after_s=r.required("EMBED_BACKOFF_RESET_AFTER", SECONDS),
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
