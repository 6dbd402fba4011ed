"""Plan: settings and resolved inputs -> one immutable TEI child spec per enabled service (pure)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from embed_launcher.config.settings import ServiceSettings, Settings

LABELS = {"embed": "Embeddings", "rerank": "Reranker"}

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

    name: str  # "embed" | "rerank": log prefix and state-file key
    label: str  # "Embeddings" | "Reranker": for messages
    model: str  # the repo id users know it by
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(repr=False)
    port: int = 0
    health_url: str = ""
    metrics_url: str = ""
    secrets: tuple[str, ...] = field(default=(), repr=False)  # values to mask in relayed output


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
    tei_bin: str, service: ServiceSettings, *, model_source: str, host: str, cache_dir: Path
) -> tuple[str, ...]:
    """TEI's command line: always explicit address, ports and paths; tuning flags last."""
    argv = [
        tei_bin,
        "--model-id", model_source,
        "--served-model-name", service.served_model_name or service.model,
        "--hostname", host,
        "--port", str(service.port),
        "--prometheus-port", str(service.prometheus_port),
        # Only python backends use it, but they delete whatever is there: one per child.
        "--uds-path", f"/tmp/text-embeddings-inference-{service.name}-{service.port}",
        "--huggingface-hub-cache", str(cache_dir),
    ]  # fmt: skip
    if service.revision:
        argv += ["--revision", service.revision]
    for flag, value in service.tei_args:
        argv += [flag, value]
    return tuple(argv)


def build_plan(
    settings: Settings,
    *,
    tei_bin: str,
    keys: Mapping[str, str | None],
    model_sources: Mapping[str, str],
    parent_env: Mapping[str, str],
) -> tuple[ChildSpec, ...]:
    """One spec per enabled service, embeddings first.

    ``keys`` maps service name to its API key (None or "" = no auth); ``model_sources`` maps
    service name to what TEI gets as --model-id (a snapshot directory once downloaded, else the
    repo id). Neither secret ever reaches argv.
    """
    specs = []
    for service in settings.services:
        key = keys.get(service.name) or None
        env = child_env(parent_env, api_key=key, hf_token=settings.hf_token)
        source = model_sources.get(service.name, service.model)
        if source != service.model:
            env["HF_HUB_OFFLINE"] = "1"  # a local snapshot: nothing to fetch
        secrets = tuple(s for s in (key, settings.hf_token) if s)
        specs.append(
            ChildSpec(
                name=service.name,
                label=LABELS[service.name],
                model=service.model,
                argv=child_argv(tei_bin, service, model_source=source, host=settings.host, cache_dir=settings.data_dir),
                env=env,
                port=service.port,
                health_url=f"http://{probe_host(settings.host)}:{service.port}/health",
                metrics_url=f"http://{probe_host(settings.host)}:{service.port}/metrics",
                secrets=secrets,
            )
        )
    return tuple(specs)
