"""Plan: settings and resolved inputs -> one immutable child spec per TEI, and the gateway's (pure).

The gateway's own configuration (EMBED_GATEWAY_CONFIG) is built in gateway_plan."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from embed_launcher.config.services import ServiceSettings
from embed_launcher.config.settings import RERANK, Settings
from embed_launcher.supervision.gateway_plan import LOOPBACK, gateway_config
from embed_launcher.supervision.placement import Placement, Slot

GATEWAY = "gateway"

# What a TEI child may inherit from the launcher's environment: the loader's, the runtime
# libraries' and the proxy's needs. Everything else is dropped, because TEI reads HOSTNAME,
# PORT, API_KEY, MODEL_ID, LOG_LEVEL, TASK... from env (tei-contract §1) and Docker sets HOSTNAME.
PASSTHROUGH_NAMES = frozenset(
    {
        "PATH", "HOME", "USER", "LANG", "LC_ALL", "TZ", "TMPDIR",
        "LD_LIBRARY_PATH", "LD_PRELOAD",
        "HF_ENDPOINT", "HF_HOME",
        "SSL_CERT_FILE", "SSL_CERT_DIR",
        "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
        "USE_FLASH_ATTENTION",
    }
)  # fmt: skip
PASSTHROUGH_PREFIXES = ("CUDA_", "NVIDIA_", "MKL_", "OMP_", "RAYON_", "ORT_")


@dataclass(frozen=True)
class ChildSpec:
    """Everything needed to start, probe and describe one TEI process."""

    name: str  # "embed", "rerank", "embed-bge-m3", "gateway": log prefix and status key
    label: str  # "Embeddings", "Reranker", "Embeddings (BAAI/bge-m3)", "Gateway": for messages
    model: str  # the repo id users know it by ("" for the gateway)
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(repr=False)
    port: int = 0
    health_url: str = ""
    metrics_url: str = ""
    secrets: tuple[str, ...] = field(default=(), repr=False)  # values to mask in relayed output
    kind: str = "embed"  # embed | sparse | rerank | gateway
    # The gateway: any HTTP answer from health_url means it listens and its loop turns. Its 503 says
    # "a TEI was never ready yet", which the TEIs' own checks judge; its start must not wait for them.
    listening_is_ready: bool = False
    service: str = ""  # the service (model) this replica serves: "embed"; "" = the spec's own name
    replica: int = 0  # which of the model's replicas
    replicas: int = 1  # how many the model has
    gpu: str | None = None  # its CUDA_VISIBLE_DEVICES, on a GPU host
    cpus: tuple[int, ...] = ()  # the cores it is pinned to (CPU replicas); () = not pinned

    @property
    def service_name(self) -> str:
        return self.service or self.name


def replica_name(service: str, replica: int, replicas: int) -> str:
    """A replica's child name: the service's own for a single replica (status keys stay), else "embed#1"."""
    return service if replicas == 1 else f"{service}#{replica}"


def replica_label(label: str, slot: Slot, replicas: int) -> str:
    """How messages name a replica: "Embeddings", or "Embeddings replica 1 (GPU 2)"."""
    where = f" (GPU {slot.gpu})" if slot.gpu is not None else ""
    return f"{label}{where}" if replicas == 1 else f"{label} replica {slot.replica}{where}"


def probe_host(host: str) -> str:
    """The address to reach a server bound to ``host`` from this machine, URL-ready."""
    ip = ipaddress.ip_address(host)
    if ip.is_unspecified:
        return "127.0.0.1" if ip.version == 4 else "[::1]"
    return f"[{ip}]" if ip.version == 6 else str(ip)


def child_env(parent_env: Mapping[str, str], *, api_key: str | None, hf_token: str | None) -> dict[str, str]:
    """A scrubbed environment: passthrough names only, plus what we decide TEI should see."""
    env = {k: v for k, v in parent_env.items() if k in PASSTHROUGH_NAMES or k.startswith(PASSTHROUGH_PREFIXES)}
    env["NO_COLOR"] = "1"  # TEI writes ANSI codes even into pipes unless told not to
    if api_key:
        env["API_KEY"] = api_key  # never on argv: /proc/<pid>/cmdline is world-readable
    if hf_token:
        env["HF_TOKEN"] = hf_token
    return env


def child_argv(
    tei_bin: str, service: ServiceSettings, *, model_source: str, host: str, cache_dir: Path, child: str = "",
    json_logs: bool = False,
) -> tuple[str, ...]:
    """TEI's command line: always explicit address, ports and paths; tuning flags last.

    ``json_logs`` (EMBED_LOG_FORMAT=json): TEI's own `--json-output`, one JSON object per line, relayed as it is.
    """
    argv = [
        tei_bin,
        "--model-id", model_source,
        "--served-model-name", service.served_model_name or service.model,
        "--hostname", host,
        "--port", str(service.port),
        "--prometheus-port", str(service.prometheus_port),
        # Only python backends use it, but they delete whatever is there: one per child.
        "--uds-path", f"/tmp/text-embeddings-inference-{child or service.name}-{service.port}",
        "--huggingface-hub-cache", str(cache_dir),
    ]  # fmt: skip
    if service.revision:
        argv += ["--revision", service.revision]
    if json_logs:
        argv.append("--json-output")
    for flag, value in service.tei_args:
        argv += [flag, value]
    return tuple(argv)


def key_for(service: ServiceSettings, keys: Mapping[str, str | None]) -> str | None:
    """A service's API key: the reranker key for rerank models, the embeddings key otherwise."""
    return keys.get(RERANK if service.kind == RERANK else "embed") or None


def build_plan(
    settings: Settings,
    *,
    tei_bin: str,
    keys: Mapping[str, str | None],
    model_sources: Mapping[str, str],
    parent_env: Mapping[str, str],
    internal_ports: Mapping[str, tuple[int, int]] | None = None,
    python: str = "python3",
    created: int = 0,
    placement: Placement | None = None,
) -> tuple[ChildSpec, ...]:
    """One spec per enabled service, embeddings first, then the gateway's: serving the public ports when it
    is on, only /metrics on the Prometheus ports when it is off (EMBED_GATEWAY=false).

    ``keys`` maps "embed"/"rerank" to the API key (None or "" = no auth); ``model_sources`` maps
    service name to what TEI gets as --model-id (a snapshot directory once downloaded, else the
    repo id); ``internal_ports`` maps service name to (port, Prometheus port) on 127.0.0.1 when
    the gateway serves the public ports. ``placement`` (placement.place) gives each model its
    replicas, one child each, keyed in ``internal_ports`` by replica_name; None = one replica each,
    placed nowhere in particular. No secret ever reaches argv.
    """
    specs = []
    gateway = settings.gateway and internal_ports is not None
    metrics_only = not settings.gateway  # TEI itself on the public ports; the gateway on its Prometheus port
    for configured in settings.services:
        slots = (placement or {}).get(configured.name, (Slot(0),))
        for slot in slots:
            service = configured
            name = replica_name(service.name, slot.replica, len(slots))
            key = key_for(service, keys)
            env = child_env(parent_env, api_key=key, hf_token=settings.hf_token)
            if slot.gpu is not None:
                env["CUDA_VISIBLE_DEVICES"] = slot.gpu  # one GPU each: TEI uses device 0 of what it sees
            source = model_sources.get(service.name, service.model)
            if source != service.model:
                env["HF_HUB_OFFLINE"] = "1"  # a local snapshot: nothing to fetch
            if slot.tokenization_workers and service.tei_arg("--tokenization-workers") is None:
                workers = (("--tokenization-workers", str(slot.tokenization_workers)),)
                service = replace(service, tei_args=service.tei_args + workers)
            host = settings.host
            if gateway:
                assert internal_ports is not None
                port, metrics_port = internal_ports[name]
                service, host = replace(service, port=port, prometheus_port=metrics_port), LOOPBACK
            elif metrics_only:
                service = replace(service, prometheus_port=0)  # TEI's instant bind: any free port (§3.3, §8)
            secrets = tuple(s for s in (key, settings.hf_token) if s)
            specs.append(
                ChildSpec(
                    name=name,
                    label=replica_label(service.label, slot, len(slots)),
                    model=service.model,
                    kind=service.kind,
                    argv=child_argv(tei_bin, service, model_source=source, host=host, cache_dir=settings.data_dir,
                                    child=name, json_logs=settings.log_format == "json"),
                    env=env,
                    port=service.port,
                    health_url=f"http://{probe_host(host)}:{service.port}/health",
                    metrics_url=f"http://{probe_host(host)}:{service.port}/metrics",
                    secrets=secrets,
                    service=service.name,
                    replica=slot.replica,
                    replicas=len(slots),
                    gpu=slot.gpu,
                    cpus=slot.cpus,
                )
            )
    if gateway or metrics_only:
        specs.append(gateway_spec(settings, specs, keys, parent_env, python=python, created=created))
    return tuple(specs)


def gateway_spec(
    settings: Settings,
    children: list[ChildSpec],
    keys: Mapping[str, str | None],
    parent_env: Mapping[str, str],
    *,
    python: str,
    created: int,
) -> ChildSpec:
    """The gateway: the public ports, routing each request to its model's TEI on 127.0.0.1 (or, with
    EMBED_GATEWAY=false, the Prometheus ports, answering /metrics for the TEIs on the public ports)."""
    env = child_env(parent_env, api_key=None, hf_token=None)
    env.pop("NO_COLOR", None)
    tei_host = LOOPBACK if settings.gateway else probe_host(settings.host)
    config = gateway_config(settings, children, created=created, tei_host=tei_host)
    env["EMBED_GATEWAY_CONFIG"] = config.to_json()
    embed_key, rerank_key = keys.get("embed") or "", keys.get(RERANK) or ""
    env["EMBED_GATEWAY_EMBED_KEY"], env["EMBED_GATEWAY_RERANK_KEY"] = embed_key, rerank_key
    # hashes only; watched by the gateway. With EMBED_GATEWAY=false only the default keys work (TEI checks them).
    env["EMBED_API_KEYS_FILE"] = str(settings.keys_file or "") if settings.gateway else ""
    env["EMBED_GATEWAY_STATE_DIR"] = str(settings.data_dir)  # where it records the keys' last use
    door = config.listen[0].port
    return ChildSpec(
        name=GATEWAY,
        label="Gateway",
        model="",
        kind=GATEWAY,
        argv=(python, "-m", "embed_launcher.gateway"),
        env=env,
        port=door,
        health_url=f"http://{probe_host(settings.host)}:{door}/health",
        metrics_url="",  # it serves no /metrics: a silent /health is a failed check, not "busy"
        secrets=tuple(k for k in (embed_key, rerank_key) if k),
        listening_is_ready=True,
    )
