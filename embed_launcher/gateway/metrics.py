"""The gateway's own Prometheus families, and the small calls the handlers and upstreams count with.

One `Metrics` per gateway process. With several workers (EMBED_GATEWAY_WORKERS) the parent sets
PROMETHEUS_MULTIPROC_DIR before the workers import prometheus_client (gateway/workers.py): every
worker writes its values to its own files there and each `/metrics` reads them all, so any worker
answers the same totals. With one process the values live in this process's private registry.

Every family is present from start-up: each label set the configuration knows of (model, replica)
is created at zero. `embed_requests_total` starts with one series per model, on its kind's main
route with code 200; the rest appear as requests arrive.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from contextvars import ContextVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.multiprocess import MultiProcessCollector

from embed_launcher.gateway.config import GatewayConfig

MULTIPROC_VAR = "PROMETHEUS_MULTIPROC_DIR"
# The route a model's requests are first counted on (its kind's usual route), so the family has a series at zero.
MAIN_ROUTE = {"embed": "/v1/embeddings", "sparse": "/embed_sparse", "rerank": "/rerank"}
NO_MODEL = ""  # the `model` label of requests that reach no model (/health, listings, refused keys, 404s)
UNMATCHED = "unmatched"  # the `route` label of a path that is no route

# The model a request reached, set where the handlers choose it (the path, the body or the default).
REQUEST_MODEL: ContextVar[str] = ContextVar("request_model", default=NO_MODEL)


def replica_label(number: int) -> str:
    """The `replica` label: the replica's 0-based number among its model's, as the launcher numbers its
    children (`embed#0`, `embed#1`, … in `embed_manage --status`)."""
    return str(number)


class Metrics:
    """The gateway's counting families; ``counting=False`` (a benchmark's control run) counts nothing."""

    def __init__(self, config: GatewayConfig, *, counting: bool = True, environ: dict[str, str] | None = None) -> None:
        environ = dict(os.environ) if environ is None else environ
        self.counting = counting
        self.multiproc_dir = environ.get(MULTIPROC_VAR) or None
        # Multiprocess mode: the values go to the shared directory, never to a registry of this process.
        own: CollectorRegistry | None = None if self.multiproc_dir else CollectorRegistry(auto_describe=True)
        self.registry = own if own is not None else _multiprocess_registry(self.multiproc_dir or "")
        self.requests = Counter("embed_requests_total", "Requests through the gateway, by model, route and status code",
                                ["model", "route", "code"], registry=own)
        self.duration = Histogram("embed_request_duration_seconds",
                                  "Seconds from a request's arrival to its answer, by model", ["model"], registry=own)
        self.inputs = Counter("embed_inputs_total", "Inputs (texts, documents) sent to the model", ["model"],
                              registry=own)
        self.inflight = Gauge("embed_inflight_inputs", "Inputs in flight to each replica", ["model", "replica"],
                              registry=own, multiprocess_mode="livesum")
        self.waits = Counter("embed_gateway_waits_total",
                             "Requests that waited because no replica of the model was ready", ["model"], registry=own)
        self.retries = Counter("embed_gateway_retries_total",
                               "Requests sent again: to another replica after a refused connection, or once more "
                               "after a kept-alive connection closed", ["model"], registry=own)
        self.splits = Counter("embed_batch_splits_total", "Requests cut into the model's batch size", ["model"],
                              registry=own)
        self.scrape_errors = Counter("embed_scrape_errors_total",
                                     "TEI /metrics scrapes left out of an answer: no answer within the deadline, "
                                     "or an error", ["model"], registry=own)
        self._requests: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._inputs: dict[str, Counter] = {}
        self._inflight: dict[tuple[str, int], Gauge] = {}
        self.present(config)

    def present(self, config: GatewayConfig) -> None:
        """Every family's series of every model at zero (at start, and for the models a reload adds)."""
        for model in config.models:
            self.requests.labels(model.name, MAIN_ROUTE[model.kind], "200")
            self.duration.labels(model.name)
            for family in (self.inputs, self.waits, self.retries, self.splits, self.scrape_errors):
                family.labels(model.name)
            for number in range(len(model.upstreams)):
                self.inflight.labels(model.name, replica_label(number))

    # what the handlers call: cheap, and nothing at all when counting is off ------------------------
    # The label sets seen are kept in plain dicts: a dict lookup instead of labels()'s lock and key checks
    # (half the cost of counting a request; benchmarks/metrics_bench.py).
    def request_done(self, model: str, route: str, code: int, seconds: float) -> None:
        if self.counting:
            key = (model, route, code)
            children = self._requests.get(key)
            if children is None:
                children = self._requests[key] = (self.requests.labels(model, route, str(code)),
                                                  self.duration.labels(model))
            children[0].inc()
            children[1].observe(seconds)

    def sent_inputs(self, model: str, count: int) -> None:
        if self.counting:
            child = self._inputs.get(model)
            if child is None:
                child = self._inputs[model] = self.inputs.labels(model)
            child.inc(count)

    def in_flight(self, model: str, replica: int, delta: int) -> None:
        if self.counting:
            key = (model, replica)
            child = self._inflight.get(key)
            if child is None:
                child = self._inflight[key] = self.inflight.labels(model, replica_label(replica))
            child.inc(delta)

    def waited(self, model: str) -> None:
        if self.counting:
            self.waits.labels(model).inc()

    def retried(self, model: str) -> None:
        if self.counting:
            self.retries.labels(model).inc()

    def split(self, model: str) -> None:
        if self.counting:
            self.splits.labels(model).inc()

    def scrape_failed(self, models: Iterable[str]) -> None:
        for model in models:  # counted even when requests are not: it describes /metrics itself
            self.scrape_errors.labels(model).inc()


def _multiprocess_registry(path: str) -> CollectorRegistry:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path)
    return registry
