"""Configuration: read the environment and the env file, validate, return frozen Settings (pure)."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from embed_launcher.config.envfile import env_file_path, parse_env_text, sanitise
from embed_launcher.config.kinds import (
    AUTO_BOOL,
    BACKEND,
    BALANCE,
    BOOL,
    COUNT,
    GPUS,
    HOST,
    LOG_FORMAT,
    MODEL,
    PERSISTENCE,
    SECONDS,
    SERVER_ADDR,
    TEXT,
    TOKEN_INPUT,
)  # fmt: skip
from embed_launcher.config.modelsfile import ModelEntry, parse_models_file
from embed_launcher.config.reader import Reader
from embed_launcher.config.services import (
    SPARSE,
    ModelChoice,
    ServiceSettings,
    check_ports,
    check_served_names,
    child_name,
    default_service,
    extra_service,
    models_of_kind,
)
from embed_launcher.config.variables import (
    DATA_DIR_DEFAULT,
    EMBED,
    ENV_FILE_DEFAULT,
    KEYS_FILE_DEFAULT,
    PREFIXES,
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
    embed: ServiceSettings  # the default embeddings model (its door: EMBED_PORT)
    rerank: ServiceSettings  # the default reranker (its door: RERANK_PORT)
    extra: tuple[ServiceSettings, ...] = ()  # every other model: more of a kind, and sparse models
    models_file: Path | None = None
    keys_file: Path | None = None  # EMBED_API_KEYS_FILE, else <data dir>/keys.toml (watched even while absent)
    keys_file_given: bool = False  # EMBED_API_KEYS_FILE was set: the file must exist, and the gateway is on
    gateway: bool = False  # one gateway serves the public ports; the TEIs listen on 127.0.0.1
    gateway_wait_s: float = 30.0
    gateway_workers: int = 1
    gateway_access_log: bool = False
    metrics_auth: bool = False  # EMBED_METRICS_AUTH: the gateway's /metrics needs a key with the metrics scope
    gateway_max_inputs: int = 8192
    gateway_read_timeout_s: float = 60.0
    gateway_upstream_timeout_s: float = 600.0
    token_input: str = "reject"  # EMBED_TOKEN_INPUT
    log_format: str = "text"  # EMBED_LOG_FORMAT: text or json
    gateway_balance: str = "least-inputs"  # EMBED_GATEWAY_BALANCE
    gateway_allowed: bool = True  # EMBED_GATEWAY is not false: auto replicas may turn the gateway on
    gpus: tuple[str, ...] | None = None  # EMBED_GPUS; None = CUDA_VISIBLE_DEVICES or nvidia-smi -L
    drain_timeout_s: float = 30.0  # a reload: how long replaced TEIs may finish their requests (EMBED_DRAIN_TIMEOUT)
    warnings: tuple[str, ...] = ()  # non-fatal notes found while loading (unknown keys...)

    @property
    def services(self) -> tuple[ServiceSettings, ...]:
        """Every enabled TEI child: the default embeddings model, the default reranker, then the others."""
        return tuple(s for s in (self.embed, self.rerank, *self.extra) if s.enabled)


_DEFAULTS = {v.name: v.default for v in VARIABLES}
_ORDER = {v.name: i for i, v in enumerate(VARIABLES)}


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
    environ: Mapping[str, str],
    env_file_text: str | None,
    *,
    env_file: Path,
    cwd: Path,
    read_file: Callable[[Path], str] | None = None,
) -> Settings:
    """Merge defaults < environment < env file, validate everything, raise ConfigError once.

    ``read_file`` reads the models file (EMBED_MODELS_FILE) when one is named (the caller's effect;
    without it the file counts as unreadable); an OSError is reported like any other problem.
    """
    file_values, syntax, file_keys = parse_env_text(env_file_text or "", env_file)
    env_values = {k: sanitise(v) for k, v in environ.items() if k.startswith(_PREFIXES)}
    reader = Reader(env_values | file_values)
    entries = _models_file(reader, cwd, read_file)
    settings = _settings(reader, env_file, cwd, entries)
    if syntax or reader.problems:
        raise ConfigError(syntax + sorted(reader.problems, key=_doc_order))
    warnings = _unknown(sorted(environ), "the environment") + _unknown(file_keys, str(env_file))
    if "EMBED_ENV_FILE" in file_values:
        warnings.append(f"EMBED_ENV_FILE in {env_file} has no effect (ignored; set it in the "
                        "process environment)")
    return replace(settings, warnings=tuple(warnings + reader.warnings))


def _models_file(r: Reader, cwd: Path, read_file: Callable[[Path], str] | None) -> tuple[ModelEntry, ...]:
    """The models file's entries (none when EMBED_MODELS_FILE is unset); problems go to ``r``."""
    name = r.optional("EMBED_MODELS_FILE", TEXT)
    if not name:
        return ()
    path = cwd / name
    try:
        if read_file is None:
            raise PermissionError(1, "no reader given")
        text = read_file(path)
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        r.problems.append(f"EMBED_MODELS_FILE {path} cannot be read: {reason}.")
        return ()
    entries, problems = parse_models_file(text, path)
    r.problems.extend(problems)
    return entries


def _auto_or_bool(value: object) -> bool | None:
    """"auto" means: let the launcher detect it."""
    return value if isinstance(value, bool) else None


def _doc_order(problem: str) -> int:
    """Sort key: the documented position of the variable a problem starts with."""
    return _ORDER.get(problem.split()[0], -1)


def _settings(r: Reader, env_file: Path, cwd: Path, entries: tuple[ModelEntry, ...]) -> Settings:
    """Read every variable (problems accumulate in `r`) into a Settings record."""
    embed_on = r.required("EMBED_ENABLED", BOOL)
    rerankers_declared = any(e.kind == RERANK for e in entries)
    rerank_on = r.required("RERANK_ENABLED", BOOL) if r.given("RERANK_ENABLED") or not rerankers_declared else True
    embed_models, rerank_models = models_of_kind(r, EMBED, entries), models_of_kind(r, RERANK, entries)
    embed = default_service(r, EMBED, embed_on, None, embed_models[0])
    rerank = default_service(r, RERANK, rerank_on, None if embed_on else "8000", rerank_models[0])
    check_ports(r, embed, rerank)
    extra = _extra_services(r, entries, embed, rerank, embed_models[1:], rerank_models[1:])
    services = [s for s in (embed, rerank, *extra) if s.enabled]
    check_served_names(r, services)
    gateway = _gateway(r, services)
    delay = r.required("EMBED_RESTART_DELAY", SECONDS)
    max_delay = r.required("EMBED_RESTART_MAX_DELAY", SECONDS)
    if max_delay < delay and not r.bad & {"EMBED_RESTART_DELAY", "EMBED_RESTART_MAX_DELAY"}:
        r.problems.append(f"EMBED_RESTART_MAX_DELAY must be at least EMBED_RESTART_DELAY "
                          f"({delay:g}); got {max_delay:g}.")
    models_file = r.optional("EMBED_MODELS_FILE", TEXT)
    data_dir = cwd / r.required("EMBED_DATA_DIR", TEXT)  # absolute paths stay as they are
    keys_file = r.optional("EMBED_API_KEYS_FILE", TEXT)
    return Settings(
        data_dir=data_dir,
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
        drain_timeout_s=r.required("EMBED_DRAIN_TIMEOUT", SECONDS),
        embed=embed,
        rerank=rerank,
        extra=extra,
        models_file=cwd / models_file if models_file else None,
        keys_file=cwd / keys_file if keys_file else data_dir / KEYS_FILE_DEFAULT,
        keys_file_given=bool(keys_file),
        gateway=gateway,
        gateway_wait_s=r.required("EMBED_GATEWAY_WAIT", SECONDS),
        gateway_workers=r.required("EMBED_GATEWAY_WORKERS", COUNT),
        gateway_access_log=r.required("EMBED_GATEWAY_ACCESS_LOG", BOOL),
        metrics_auth=r.required("EMBED_METRICS_AUTH", BOOL),
        gateway_max_inputs=r.required("EMBED_GATEWAY_MAX_INPUTS", COUNT),
        gateway_read_timeout_s=r.required("EMBED_GATEWAY_READ_TIMEOUT", SECONDS),
        gateway_upstream_timeout_s=r.required("EMBED_GATEWAY_UPSTREAM_TIMEOUT", SECONDS),
        token_input=r.required("EMBED_TOKEN_INPUT", TOKEN_INPUT),
        log_format=r.required("EMBED_LOG_FORMAT", LOG_FORMAT),
        gateway_balance=r.required("EMBED_GATEWAY_BALANCE", BALANCE),
        gateway_allowed=r.required("EMBED_GATEWAY", AUTO_BOOL) is not False,
        gpus=r.optional("EMBED_GPUS", GPUS),
    )


def _extra_services(
    r: Reader,
    entries: tuple[ModelEntry, ...],
    embed: ServiceSettings,
    rerank: ServiceSettings,
    more_embed: list[ModelChoice],
    more_rerank: list[ModelChoice],
) -> tuple[ServiceSettings, ...]:
    """Every model beyond the two defaults, named uniquely; sparse models ride on the embeddings door."""
    taken = {EMBED, RERANK, SPARSE}
    extra: list[ServiceSettings] = []
    for door, choices in ((embed, more_embed), (rerank, more_rerank)):
        if not door.enabled:
            continue
        for c in choices:
            entry = c.entry or ModelEntry(c.model, door.kind)
            name = child_name(door.kind, entry.alias or c.model, taken)
            extra.append(extra_service(r, door.kind, entry, name, door, default=False))
    for i, entry in enumerate(e for e in entries if e.kind == SPARSE):
        name = SPARSE if i == 0 else child_name(SPARSE, entry.alias or entry.model, taken)
        extra.append(extra_service(r, SPARSE, entry, name, embed, default=i == 0))
    return tuple(extra)


def _gateway(r: Reader, services: list[ServiceSettings]) -> bool:
    """EMBED_GATEWAY: `auto` (the default) and `true` = on; `false` = TEI itself on the public ports.

    The gateway costs about 1 ms a request and gives every client its dialect (Cohere, Ollama, `/v1/rerank`,
    the header forms), so it is on unless asked off. Off is refused where only the gateway can serve: several
    models behind one port, replicas, a keys file. `auto` replicas are checked later, once the GPUs are known."""
    setting = r.required("EMBED_GATEWAY", AUTO_BOOL)
    keys_file = r.optional("EMBED_API_KEYS_FILE", TEXT)
    if setting is False and keys_file:
        r.problems.append("EMBED_API_KEYS_FILE is set, but EMBED_GATEWAY is false: the keys file's keys are checked"
                          " by the gateway. Set EMBED_GATEWAY=auto, or unset EMBED_API_KEYS_FILE.")
    per_port: dict[int, list[ServiceSettings]] = {}
    for s in services:
        per_port.setdefault(s.port, []).append(s)
    crowded = [group for group in per_port.values() if len(group) > 1]
    several = [s for s in services if s.replicas > 1 or (s.gpus is not None and len(s.gpus) > 1 and not s.replicas)]
    if setting is False and several and not crowded:
        s = several[0]
        r.problems.append(
            f"EMBED_GATEWAY is false, but {s.served_name} would run {s.replicas or len(s.gpus or ())} replicas:"
            " replicas need the gateway to share requests. Set EMBED_GATEWAY=auto, or "
            f"{PREFIXES.get(s.kind, 'EMBED_')}REPLICAS=1."
        )
    if setting is False and crowded:
        names = ", ".join(s.served_name for s in crowded[0])
        r.problems.append(
            f"EMBED_GATEWAY is false, but port {crowded[0][0].port} would serve {len(crowded[0])} models ({names}):"
            " several models behind one port need the gateway. Set EMBED_GATEWAY=auto, or serve one model."
        )
    return setting is not False


