"""The answer of `GET /metrics`: the gateway's own families, the launcher's view of each replica (its live
status file), and every TEI's `te_*` families relabelled with `model`, `kind` and `replica`.

The TEIs are scraped concurrently, each within the configured deadline (`scrape_timeout_s`); one that is
late or fails is left out and counted in `embed_scrape_errors_total{model}`, and the answer goes on
without it. Replicas the gateway knows to be down (restarting) are not asked. Text is read and written by
prometheus_client only: its parser reads TEI's text, its exposition writes ours (so TEI's counters take
the `_total` suffix the library writes: TEI's `te_request_count` is `te_request_count_total` here).
Each TEI's text is parsed as soon as it arrives (Scraper.scrape), while the others are still on their
way: parsing and writing about 3,000 samples is nearly all of an answer's CPU (benchmarks/metrics_bench.py).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from embed_launcher import __version__
from embed_launcher.gateway.config import GatewayConfig, ModelRoute
from embed_launcher.gateway.metrics import Metrics, replica_label
from embed_launcher.gateway.upstream import Upstream

TEI_PREFIX = "te_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# A replica's state (embed_replica_state{state}): the launcher's phase, or how a running one is doing;
# `unknown` while the launcher's status names it not (no status file: a gateway run on its own).
STATES = ("starting", "ready", "busy", "unhealthy", "backoff", "stopping", "stopped", "exited", "fatal", "gave_up",
          "unknown")
# Why the launcher restarted a replica (embed_replica_restarts_total{reason}): it exited on its own (crash),
# it failed its health checks (unhealthy), it was hung, or it was not ready within EMBED_READY_TIMEOUT.
REASONS = ("crash", "unhealthy", "hung", "start_timeout")
UNKNOWN_VERSION = "unknown"
_T = TypeVar("_T")


@dataclass(frozen=True)
class Replica:
    """One TEI as /metrics labels it."""

    model: ModelRoute
    number: int
    base: str
    headers: Mapping[str, str]

    @property
    def labels(self) -> dict[str, str]:
        return {"model": self.model.name, "kind": self.model.kind, "replica": replica_label(self.number)}

    @property
    def port(self) -> int | None:
        tail = self.base.rsplit(":", 1)[-1].rstrip("/")
        return int(tail) if tail.isdigit() else None


class Families(Collector):
    """Families made for one answer, for prometheus_client's exposition."""

    def __init__(self, metrics: Iterable[Metric]) -> None:
        self.metrics = list(metrics)

    def collect(self) -> Iterable[Metric]:
        return self.metrics

    def registry(self) -> CollectorRegistry:
        registry = CollectorRegistry(auto_describe=False)  # nothing to describe: its names are read once, here
        registry.register(self)
        return registry


# Pure: TEI's text relabelled, the launcher's status as families ---------------------------------

def tei_families(labels: Mapping[str, str], text: str) -> list[Metric]:
    """One TEI's `te_*` families, each sample with ``labels`` added; none for a text the parser refuses
    (that TEI is left out this time). Called as soon as that TEI answers (Scraper.scrape)."""
    try:
        families = [family for family in text_string_to_metric_families(text) if family.name.startswith(TEI_PREFIX)]
    except (ValueError, IndexError):  # the parser's two complaints (IndexError: a `# TYPE` line without a type)
        return []
    for family in families:
        for sample in family.samples:
            sample.labels.update(labels)  # the parser's own dict, made for this scrape: no copy
    return families


def merge(teis: Iterable[Sequence[Metric]]) -> list[Metric]:
    """Every TEI's families (tei_families) as one family per name (HELP and TYPE once), in the order first
    seen. A family whose type differs from the first TEI's (never expected) is left out rather than
    mislabelled."""
    merged: dict[str, Metric] = {}
    for families in teis:
        for family in families:
            into = merged.get(family.name)
            if into is None:
                into = merged[family.name] = Metric(family.name, family.documentation, family.type)
            elif into.type != family.type:
                continue
            into.samples.extend(family.samples)
    return list(merged.values())


def relabel(texts: Sequence[tuple[Mapping[str, str], str]]) -> list[Metric]:
    """Every `te_*` family of every ``(labels, text)``, its samples with ``labels`` added (tei_families),
    merged (merge)."""
    return merge(tei_families(labels, text) for labels, text in texts)


def state_of(entry: Mapping[str, Any] | None) -> str:
    """A replica's state word from its record in the launcher's status (None: not there)."""
    if entry is None:
        return "unknown"
    if entry.get("gave_up"):
        return "gave_up"
    phase = entry.get("state")
    if phase == "running":
        health = entry.get("health")
        return health if health in STATES else "ready"
    return phase if phase in STATES else "unknown"


def replica_families(replicas: Sequence[Replica], status: Mapping[str, Any] | None,
                     ready: Mapping[tuple[str, int], bool], tei_version: str) -> list[Metric]:
    """embed_replica_state, embed_replica_restarts_total, embed_up and embed_build_info, from the launcher's
    live status (its records are matched to replicas by port) and, for embed_up without a status, the
    gateway's own view of which replicas take requests."""
    entries = _entries_by_port(status)
    state = GaugeMetricFamily("embed_replica_state", "1 for the state each replica is in, 0 for the others",
                              labels=["model", "replica", "state"])
    restarts = Metric("embed_replica_restarts", "Restarts of each replica by the launcher, by reason", "counter")
    up = GaugeMetricFamily("embed_up", "1 when at least one replica of the model is ready", labels=["model"])
    models_up: dict[str, bool] = {}
    for replica in replicas:
        entry = entries.get(replica.port) if replica.port is not None else None
        word = state_of(entry)
        name, number = replica.model.name, replica_label(replica.number)
        for candidate in STATES:
            state.add_metric([name, number, candidate], 1.0 if candidate == word else 0.0)
        by_reason = entry.get("restarts_by_reason") if entry is not None else None
        for reason in REASONS:
            count = by_reason.get(reason, 0) if isinstance(by_reason, dict) else 0
            restarts.add_sample("embed_replica_restarts_total", {"model": name, "replica": number, "reason": reason},
                                float(count) if isinstance(count, (int, float)) else 0.0)
        serving = word in ("ready", "busy") if entry is not None else ready.get((name, replica.number), False)
        models_up[name] = models_up.get(name, False) or serving
    for name, serving in models_up.items():
        up.add_metric([name], 1.0 if serving else 0.0)
    info = GaugeMetricFamily("embed_build_info", "The launcher's version and TEI's (from its /info), always 1",
                             labels=["version", "tei_version"])
    info.add_metric([__version__, tei_version], 1.0)
    return [state, restarts, up, info]


def _entries_by_port(status: Mapping[str, Any] | None) -> dict[int, Mapping[str, Any]]:
    services = status.get("services") if isinstance(status, Mapping) else None
    if not isinstance(services, Mapping):
        return {}
    return {e["port"]: e for e in services.values() if isinstance(e, Mapping) and isinstance(e.get("port"), int)}


def read_status(path: str) -> Mapping[str, Any] | None:
    """The launcher's live status, or None (no path, not written yet, or half-read: the next scrape reads it)."""
    if not path:
        return None
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# Effects: the scrape ---------------------------------------------------------------------------

class Scraper:
    """Answers /metrics for one worker: asks the ready TEIs concurrently, within ``scrape_timeout_s``."""

    def __init__(self, config: GatewayConfig, upstreams: Mapping[str, Upstream], metrics: Metrics) -> None:
        self.config, self.upstreams, self.metrics = config, upstreams, metrics
        self.tei_version: str | None = None  # from the first /info that answers; TEI's version does not change
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:  # made in the serving loop, on first use; kept alive between scrapes
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30.0),
                timeout=aiohttp.ClientTimeout(total=self.config.scrape_timeout_s),
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def replicas(self) -> list[tuple[Replica, bool]]:
        """Every replica, and whether the gateway sends it requests now."""
        return [(Replica(upstream.model, r.number, r.base, r.headers), r.ready.is_set())
                for upstream in self.upstreams.values() for r in upstream.replicas]

    async def render(self) -> bytes:
        replicas = self.replicas()
        asked = [r for r, ready in replicas if ready]
        jobs = [asyncio.ensure_future(self.scrape(r)) for r in asked]
        version_job = None
        if self.tei_version is None and asked:
            version_job = asyncio.ensure_future(self.fetch(asked[0].base + "/info", asked[0].headers))
        waiting = [*jobs, version_job] if version_job is not None else jobs
        if waiting:
            await asyncio.wait(waiting, timeout=self.config.scrape_timeout_s)
        teis, failed = [], []
        for replica, job in zip(asked, jobs, strict=True):
            families = _result(job)
            if families is None:
                failed.append(replica.model.name)
            else:
                teis.append(families)
        if version_job is not None:
            self.tei_version = _version(_result(version_job))
        self.metrics.scrape_failed(failed)
        status = read_status(self.config.status_file)
        ready = {(r.model.name, r.number): up for r, up in replicas}
        own = generate_latest(self.metrics.registry)
        derived = replica_families([r for r, _ in replicas], status, ready, self.tei_version or UNKNOWN_VERSION)
        return own + generate_latest(Families(derived + merge(teis)).registry())

    async def scrape(self, replica: Replica) -> list[Metric] | None:
        """One TEI's families, parsed as soon as its text arrives: the parsing (most of an answer's CPU) is
        done while the other TEIs' answers are still on their way, not after the slowest. None: no text."""
        text = await self.fetch(replica.base + "/metrics", replica.headers)
        return None if text is None else tei_families(replica.labels, text)

    async def fetch(self, url: str, headers: Mapping[str, str]) -> str | None:
        key = headers.get("Authorization")  # TEI's /metrics is public, its /info is not
        try:
            async with self.session().get(url, headers={"Authorization": key} if key else None) as response:
                if response.status != 200:
                    return None
                return await response.text()
        except (aiohttp.ClientError, OSError, TimeoutError, UnicodeDecodeError):
            return None


def _result(job: asyncio.Future[_T | None]) -> _T | None:
    if not job.done():
        job.cancel()  # past the deadline: left out
        return None
    return None if job.cancelled() or job.exception() is not None else job.result()


def _version(text: str | None) -> str | None:
    try:
        version = json.loads(text or "").get("version")
    except (ValueError, AttributeError):
        return None
    return version if isinstance(version, str) and version else None
