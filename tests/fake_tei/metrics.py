"""TEI's `/metrics`: the recorder of metrics-exporter-prometheus 0.15.3 with the buckets of `router/src/prometheus.rs`.

What TEI renders, and when:
* the recorder is installed only when the HTTP server starts (`router/src/http/server.rs`), after
  warmup, so the body is empty until the first metric is touched;
* counters, then gauges, then histograms, each family as `# TYPE name kind`, its lines, one blank
  line; no `# HELP` (TEI describes nothing). TEI iterates Rust `HashMap`s, so the order of families
  and of label sets is arbitrary; the stand-in sorts them (one of the orders TEI may produce);
* every histogram TEI records matches one of its bucket matchers (suffix `duration`, or the full
  names `te_request_input_length`, `te_batch_next_size`, `te_batch_next_tokens`), so all render as
  Prometheus histograms (`_bucket{le=…}` cumulative, `+Inf`, `_sum`, `_count`), none as summaries;
* numbers use Rust's `Display`: counters as integers, gauges and sums as the shortest f64 text
  without exponent (`0`, `3`, `0.000015000000000000002`).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from decimal import Decimal

Labels = tuple[tuple[str, str], ...]


def rust_f64(value: float) -> str:
    """Rust's `Display` for f64: shortest round-trip digits, never an exponent, no trailing `.0`."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    text = format(Decimal(repr(value)), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _duration_buckets() -> list[float]:
    value, buckets = 0.00001, []
    for _ in range(35):  # a geometric sequence, computed as TEI does (same f64 rounding)
        value *= 1.5
        buckets.append(value)
    return buckets


DURATION_BUCKETS = _duration_buckets()
BATCH_SIZE_BUCKETS = [2.0 ** x for x in range(13)]
BATCH_TOKENS_BUCKETS = [2.0 ** x for x in range(21)]


@dataclass
class Histogram:
    """metrics-util's bucketed histogram: cumulative `sample <= bound` counts, sum and count."""

    bounds: list[float]
    buckets: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def record(self, sample: float) -> None:
        if not self.buckets:
            self.buckets = [0] * len(self.bounds)
        self.total += sample
        self.count += 1
        for index, bound in enumerate(self.bounds):
            if sample <= bound:
                self.buckets[index] += 1


class Metrics:
    """The global recorder: thread-safe counters, gauges and histograms keyed by name and labels."""

    def __init__(self, max_input_length: int) -> None:
        self.lock = threading.Lock()
        self.input_length_buckets = [2.0 ** x for x in range(20) if int(2 ** x) <= max_input_length]
        self.counters: dict[tuple[str, Labels], int] = {}
        self.gauges: dict[tuple[str, Labels], float] = {}
        self.histograms: dict[tuple[str, Labels], Histogram] = {}

    def bounds(self, name: str) -> list[float]:
        """The matchers of `router/src/prometheus.rs` (full names are tried before the suffix)."""
        full = {"te_request_input_length": self.input_length_buckets, "te_batch_next_size": BATCH_SIZE_BUCKETS,
                "te_batch_next_tokens": BATCH_TOKENS_BUCKETS}
        if name in full:
            return full[name]
        if name.endswith("duration"):
            return DURATION_BUCKETS
        raise ValueError(f"TEI configures no buckets for {name}: it would render as a summary")

    def counter(self, name: str, increment: int = 1, **labels: str) -> None:
        key = (name, tuple(labels.items()))
        with self.lock:
            self.counters[key] = self.counters.get(key, 0) + increment

    def gauge_add(self, name: str, delta: float) -> None:
        with self.lock:
            self.gauges[(name, ())] = self.gauges.get((name, ()), 0.0) + delta

    def gauge_set(self, name: str, value: float) -> None:
        with self.lock:
            self.gauges[(name, ())] = value

    def record(self, name: str, *samples: float) -> None:
        key = (name, ())
        with self.lock:
            histogram = self.histograms.setdefault(key, Histogram(self.bounds(name)))
            for sample in samples:
                histogram.record(sample)

    def render(self) -> str:
        with self.lock:
            counters, gauges = dict(self.counters), dict(self.gauges)
            histograms = {k: Histogram(h.bounds, list(h.buckets), h.total, h.count) for k, h in self.histograms.items()}
        out: list[str] = []
        for kind, values in (("counter", counters), ("gauge", gauges)):
            for name in sorted({n for n, _ in values}):
                out.append(f"# TYPE {name} {kind}\n")
                for (n, labels), value in sorted(values.items()):
                    if n == name:
                        out.append(_line(name, labels, str(value) if kind == "counter" else rust_f64(value)))
                out.append("\n")
        for name in sorted({n for n, _ in histograms}):
            out.append(f"# TYPE {name} histogram\n")
            for (n, labels), hist in sorted(histograms.items(), key=lambda item: item[0]):
                if n != name:
                    continue
                counts = hist.buckets or [0] * len(hist.bounds)
                for bound, count in zip(hist.bounds, counts, strict=True):
                    out.append(_line(name + "_bucket", labels + (("le", rust_f64(bound)),), str(count)))
                out.append(_line(name + "_bucket", labels + (("le", "+Inf"),), str(hist.count)))
                out.append(_line(name + "_sum", labels, rust_f64(hist.total)))
                out.append(_line(name + "_count", labels, str(hist.count)))
            out.append("\n")
        return "".join(out)


def _line(name: str, labels: Labels, value: str) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in labels)
    return f"{name}{{{inner}}} {value}\n" if labels else f"{name} {value}\n"
