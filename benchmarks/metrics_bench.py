"""What /metrics costs (issue 20): its answer time with 8 TEIs, and what counting takes off the gateway's req/s.

    .venv/bin/python benchmarks/metrics_bench.py [--seconds 5] [--scrapes 200] [--rounds 3] [--only scrape|counting]

Needs Debian's `wrk` and `nginx` for the throughput rows, as benchmarks/gateway_bench.py (`apt-get install -y
wrk nginx-light`); without them those rows say so. Everything listens on 127.0.0.1 only. Rows:

- `/metrics` p50/p99 (ms) with 8 TEIs (4 models × 2 replicas): nginx answers each TEI's /metrics with the
  text the TEI stand-in wrote after serving requests (every family TEI records, TEI's buckets), as fast
  as TEI's own HTTP layer would; `--scrapes` sequential scrapes on one kept-alive connection, with 1 and
  2 gateway workers (2: prometheus_client's multiprocess files).
- requests/s, single-text `/v1/embeddings` through the gateway to nginx's canned answer (wrk, 1 thread, 64
  connections), counting on and off (the internal GatewayConfig field `metrics`), alternated over `--rounds`
  rounds in the same run; the best of each compared, and the gateway's CPU per request. With 1 and 2 workers.
  On a shared machine two wrk runs differ by more than 5 % whatever they measure, so:
- counting's CPU per request: what one request's counting costs (its answer and duration, its inputs, its
  replica's in-flight inputs up and down), timed in a process of its own (with prometheus_client's
  multiprocess files for 2 workers), as a share of the gateway's CPU per request with counting off.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))
from conftest import free_ports, wait_until  # noqa: E402
from gateway_bench import SMALL_BODY, _ok, pct, start_nginx, wrk  # noqa: E402
from gateway_harness import EMBED_KEY, RERANK_KEY, Tei, start_gateway  # noqa: E402
from table import print_table  # noqa: E402

Row = tuple[str, str, str, str]
MODELS = [("BAAI/bge-small-en-v1.5", "embed", EMBED_KEY), ("BAAI/bge-m3", "embed", EMBED_KEY),
          ("naver/splade", "sparse", EMBED_KEY), ("BAAI/bge-reranker-v2-m3", "rerank", RERANK_KEY)]


TEI_NGINX = """daemon off; worker_processes 1; pid {tmp}/tei-nginx.pid; error_log {tmp}/tei-error.log;
events {{ worker_connections 1024; }}
http {{ access_log off; client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp};
  uwsgi_temp_path {tmp}; scgi_temp_path {tmp}; keepalive_requests 1000000; default_type text/plain;
{servers}
}}
"""
TEI_SERVER = """  server {{ listen 127.0.0.1:{port};
    location = /health {{ return 200 ""; }}
    location = /info {{ default_type application/json; return 200 '{{"version":"1.9.3"}}'; }}
    location = /metrics {{ alias {tmp}/tei-{kind}.txt; }}
  }}"""


def captured_texts(tmp: Path) -> dict[str, str]:
    """Each kind's /metrics from the TEI stand-in once it has served requests (TEI's families, TEI's buckets)."""
    texts = {}
    for name, kind, key in MODELS:
        if kind in texts:
            continue
        tei = Tei(tmp, name, kind, free_ports(1)[0], key).start().wait_ready()
        try:
            body = {"query": "q", "texts": ["a", "b"]} if kind == "rerank" else {"inputs": ["a", "b c"]}
            path = {"rerank": "/rerank", "sparse": "/embed_sparse"}.get(kind, "/embed")
            for _ in range(5):
                httpx.post(tei.url + path, json=body, headers={"Authorization": f"Bearer {key}"}).raise_for_status()
            texts[kind] = httpx.get(tei.url + "/metrics").text
        finally:
            tei.kill()
    return texts


def canned_teis(tmp: Path) -> tuple[subprocess.Popen[bytes], list[str]]:
    """8 TEIs (4 models × 2 replicas) answering /metrics from memory, as fast as TEI's own (Rust) HTTP layer:
    the stand-in renders its text in Python (tens of ms), which would be timed instead of the gateway."""
    for kind, text in captured_texts(tmp).items():
        (tmp / f"tei-{kind}.txt").write_text(text)
    ports = free_ports(2 * len(MODELS))
    kinds = [kind for _, kind, _ in MODELS for _ in (0, 1)]
    servers = "\n".join(TEI_SERVER.format(port=p, tmp=tmp, kind=k) for p, k in zip(ports, kinds, strict=True))
    (tmp / "tei-nginx.conf").write_text(TEI_NGINX.format(tmp=tmp, servers=servers))
    proc = subprocess.Popen([shutil.which("nginx") or "nginx", "-c", str(tmp / "tei-nginx.conf"), "-e",
                             str(tmp / "tei-e.log")], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    wait_until(lambda: all(_ok(f"http://127.0.0.1:{p}/health") for p in ports), 10)
    return proc, [f"http://127.0.0.1:{p}" for p in ports]


def scrape_rows(tmp: Path, scrapes: int) -> list[Row]:
    if not shutil.which("nginx"):
        return [("/metrics, 8 TEIs", "≤ 50", "skipped: apt-get install -y nginx-light", "—")]
    nginx, urls = canned_teis(tmp)
    models = [{"name": name, "aliases": [], "kind": kind, "upstream": urls[2 * i], "replicas": urls[2 * i:2 * i + 2],
               "default": i in (0, 2, 3)} for i, (name, kind, _) in enumerate(MODELS)]
    rows = []
    try:
        for workers in (1, 2):
            gateway = start_gateway(tmp, models, workers=workers)
            try:
                gateway.wait_healthy()
                took, size = [], 0
                with httpx.Client() as client:
                    for _ in range(20):  # warm: pools to every TEI, TEI's version
                        client.get(gateway.url("/metrics")).raise_for_status()
                    cpu_before = gateway_cpu_s(gateway.proc.pid)
                    for _ in range(scrapes):
                        began = time.perf_counter()
                        answer = client.get(gateway.url("/metrics"))
                        took.append((time.perf_counter() - began) * 1000)
                        answer.raise_for_status()
                        size = len(answer.content)
                cpu_ms = (gateway_cpu_s(gateway.proc.pid) - cpu_before) / scrapes * 1000
                assert answer.text.count('replica="1"') > 100, "some TEI was left out"
                p50, p99 = pct(took, 50), pct(took, 99)
                rows.append((f"/metrics, 8 TEIs, {workers} worker{'s' * (workers > 1)} (ms; {size // 1024} KiB)",
                             "≤ 50", f"p50 {p50:.1f}, p99 {p99:.1f}; gateway CPU {cpu_ms:.1f} per answer",
                             "yes" if p99 <= 50 else "no"))
            finally:
                gateway.stop()
    finally:
        nginx.send_signal(signal.SIGQUIT)
        nginx.wait(10)
    return rows


def throughput_rows(tmp: Path, seconds: float, rounds: int, per_request_us: dict[int, float]) -> list[Row]:
    if not (shutil.which("wrk") and shutil.which("nginx")):
        return [("requests/s, counting on vs off", "≤ 5 % less", "skipped: apt-get install -y wrk nginx-light", "—")]
    (port,) = free_ports(1)
    nginx = start_nginx(tmp, port)
    model = {"name": "bench", "aliases": [], "kind": "embed", "upstream": f"http://127.0.0.1:{port}",
             "max_client_batch_size": 1024, "default": True}
    rows = []
    try:
        for workers in (1, 2):
            best = {True: 0.0, False: 0.0}
            cpu_us: dict[bool, list[float]] = {True: [], False: []}
            for _ in range(rounds):
                for counting in (False, True):  # alternated: a slower minute of a shared machine hits both
                    gateway = start_gateway(tmp, [model], keys=(EMBED_KEY, EMBED_KEY), workers=workers,
                                            metrics=counting)
                    try:
                        gateway.wait_healthy()
                        cpu_before = gateway_cpu_s(gateway.proc.pid)
                        result = wrk(gateway.url("/v1/embeddings"), SMALL_BODY, seconds, 64)
                        served = result["rps"] * round(seconds)
                        cpu_us[counting].append((gateway_cpu_s(gateway.proc.pid) - cpu_before) / served * 1e6)
                        assert not result["errors"], result
                        best[counting] = max(best[counting], result["rps"])
                    finally:
                        gateway.stop()
            cost = (best[False] - best[True]) / best[False] * 100
            off_us, on_us = min(cpu_us[False]), min(cpu_us[True])
            per_request_us[workers] = off_us
            change = f"{abs(cost):.1f} % {'less' if cost >= 0 else 'more'}"
            rows.append((f"requests/s, one text, {workers} worker{'s' * (workers > 1)}: off → on", "≤ 5 % less",
                         f"{best[False]:.0f} → {best[True]:.0f} ({change}); gateway CPU per request "
                         f"{off_us:.0f} → {on_us:.0f} µs ({(on_us - off_us) / off_us * 100:+.1f} %)",
                         "yes" if cost <= 5 else "no"))
    finally:
        nginx.send_signal(signal.SIGQUIT)
        nginx.wait(10)
    return rows


COUNTING = """
import time
from embed_launcher.gateway.config import GatewayConfig
from embed_launcher.gateway.metrics import Metrics
config = GatewayConfig.from_dict({"listen": [{"host": "127.0.0.1", "port": 1}], "models": [
    {"name": "bench", "kind": "embed", "upstream": "http://127.0.0.1:2", "default": True}]})
metrics, n = Metrics(config), 100_000
began = time.process_time()
for _ in range(n):  # what one unsplit request counts: its answer, its inputs, its replica's in-flight up and down
    metrics.request_done("bench", "/v1/embeddings", 200, 0.001)
    metrics.sent_inputs("bench", 1)
    metrics.in_flight("bench", 0, 1)
    metrics.in_flight("bench", 0, -1)
print((time.process_time() - began) / n * 1e6)
"""


def counting_us(multiproc: Path | None) -> float:
    """CPU µs that counting adds to one request, in a process of its own (multiprocess mode is chosen at import)."""
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    if multiproc is not None:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(multiproc)
    out = subprocess.run([sys.executable, "-c", COUNTING], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout)


def counting_rows(tmp: Path, per_request_us: dict[int, float]) -> list[Row]:
    """Counting's CPU per request against the gateway's whole CPU per request with counting off: a ratio that a
    busy machine does not blur the way it blurs two wrk runs minutes apart."""
    rows = []
    for workers in (1, 2):
        shared = tmp / f"multiproc-{workers}"
        shared.mkdir(exist_ok=True)
        cost = min(counting_us(shared if workers > 1 else None) for _ in range(3))
        base = per_request_us.get(workers)
        share = f"{cost / base * 100:.1f} % of the gateway's {base:.0f} µs" if base else "no wrk run to compare"
        rows.append((f"counting's CPU per request, {workers} worker{'s' * (workers > 1)} (µs)", "≤ 5 %",
                     f"{cost:.1f} ({share})", "yes" if base and cost / base <= 0.05 else "—"))
    return rows


def gateway_cpu_s(pid: int) -> float:
    """CPU seconds of the gateway and its workers: what /metrics costs, whatever else the machine runs."""
    procs = [psutil.Process(pid), *psutil.Process(pid).children()]
    return sum(sum(p.cpu_times()[:2]) for p in procs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=("scrape", "counting"), default=None,
                        help="only the /metrics rows, or only the counting rows (wrk and per-request CPU)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="metrics-bench-"))
    try:
        per_request_us: dict[int, float] = {}
        rows = scrape_rows(tmp, args.scrapes) if args.only != "counting" else []
        if args.only != "scrape":
            rows += throughput_rows(tmp, args.seconds, args.rounds, per_request_us)
            rows += counting_rows(tmp, per_request_us)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load = os.getloadavg()[0]
    print_table(f"/metrics benchmark, {os.cpu_count()} CPUs (load {load:.1f} at the end), Python "
                f"{sys.version.split()[0]}; loopback only", ("measure", "target", "measured", "met"), rows,
                figures=(1, 2))


if __name__ == "__main__":
    main()
