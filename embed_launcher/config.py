"""Configuration: read the environment and the env file, validate, return frozen Settings (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

EMBED = "embed"
RERANK = "rerank"


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
