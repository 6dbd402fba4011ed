"""The gateway's configuration from the settings: where it listens, each model's TEI, its limits (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from embed_launcher.config.settings import RERANK, Settings
from embed_launcher.config.variables import STATUS_FILE
from embed_launcher.gateway.config import DEFAULT_DRAIN_S, GatewayConfig, Listener, ModelRoute

LOOPBACK = "127.0.0.1"
TEI_DEFAULT_CLIENT_BATCH = 32  # TEI's own --max-client-batch-size
TEI_DEFAULT_PAYLOAD_LIMIT = 2_000_000  # TEI's own --payload-limit
# The gateway drains in-flight requests after SIGTERM, then cancels what is left, closes its
# sockets and exits; the supervisor SIGKILLs it EMBED_STOP_TIMEOUT after the SIGTERM. The drain
# leaves CLOSE_MARGIN_S (or half the stop timeout, when that is short) for the closing, so the
# SIGKILL never cuts a drain short: clients get an answer or a closed connection, not a reset.
CLOSE_MARGIN_S = 3.0


class Child(Protocol):
    """What the gateway needs of a TEI child's spec (plan.ChildSpec): its name ("embed", or replica
    "embed#1") and its port."""

    @property
    def name(self) -> str: ...

    @property
    def port(self) -> int: ...


def drain_s(stop_timeout_s: float) -> float:
    """The gateway's drain after SIGTERM: inside the supervisor's stop timeout, with room to close."""
    return min(DEFAULT_DRAIN_S, max(stop_timeout_s - CLOSE_MARGIN_S, stop_timeout_s / 2))


def gateway_listen(settings: Settings) -> tuple[Listener, ...]:
    """The public ports: the embeddings door serves every route; the reranker's door its own routes."""
    doors: list[Listener] = []
    if any(s.kind != RERANK for s in settings.services):
        doors.append(Listener(settings.host, settings.embed.port, "all"))
    if settings.rerank.enabled and not any(d.port == settings.rerank.port for d in doors):
        doors.append(Listener(settings.host, settings.rerank.port, "rerank" if doors else "all"))
    return tuple(doors)


def metrics_listen(settings: Settings) -> tuple[Listener, ...]:
    """EMBED_GATEWAY=false: TEI itself holds the public ports, so the gateway serves /metrics (and /health)
    on each model's Prometheus port (EMBED_PROMETHEUS_PORT, RERANK_PROMETHEUS_PORT), where TEI's own
    metrics listener would be in a gRPC build (an HTTP build only binds it for an instant: tei-contract §3.3)."""
    ports = dict.fromkeys(s.prometheus_port for s in settings.services)
    return tuple(Listener(settings.host, port, "metrics") for port in ports)


def gateway_config(
    settings: Settings, children: Sequence[Child], *, created: int, tei_host: str = LOOPBACK
) -> GatewayConfig:
    """The gateway's EMBED_GATEWAY_CONFIG (no secrets): where it listens, and each model's TEI (on
    ``tei_host``: 127.0.0.1 behind the gateway, the public address that TEI binds with EMBED_GATEWAY=false)."""
    upstreams: dict[str, list[str]] = {}
    for c in children:  # in replica order
        upstreams.setdefault(c.name.split("#")[0], []).append(f"http://{tei_host}:{c.port}")
    models = []
    for s in settings.services:
        batch = s.tei_arg("--max-client-batch-size")
        replicas = upstreams[s.name]
        models.append(
            ModelRoute(
                name=s.served_name,
                kind=s.kind,
                upstream=replicas[0],
                replicas=tuple(replicas) if len(replicas) > 1 else (),
                aliases=(s.model,) if s.served_name != s.model else (),
                max_client_batch_size=int(batch) if batch else TEI_DEFAULT_CLIENT_BATCH,
                default=s.default,
                prompts=dict(s.prompts),
                matryoshka_dimensions=s.matryoshka_dimensions,
            )
        )
    limits = [int(s.tei_arg("--payload-limit") or TEI_DEFAULT_PAYLOAD_LIMIT) for s in settings.services]
    return GatewayConfig(
        listen=gateway_listen(settings) if settings.gateway else metrics_listen(settings),
        models=tuple(models),
        wait_s=settings.gateway_wait_s,
        access_log=settings.gateway_access_log,
        workers=settings.gateway_workers if settings.gateway else 1,  # for /metrics alone, one process is plenty
        created=created,
        max_body_bytes=max(limits),  # each TEI still applies its own limit
        max_inputs=settings.gateway_max_inputs,
        read_timeout_s=settings.gateway_read_timeout_s,
        upstream_timeout_s=settings.gateway_upstream_timeout_s,
        drain_s=drain_s(settings.stop_timeout_s),
        token_input=settings.token_input,
        balance=settings.gateway_balance,
        metrics_auth=settings.metrics_auth,
        status_file=str(settings.data_dir / STATUS_FILE),  # replica states and restarts, read at each scrape
        log_format=settings.log_format,
    )
