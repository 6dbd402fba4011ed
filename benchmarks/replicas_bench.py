"""Replicas behind the gateway (issue 19): scaling, heterogeneous replicas, and nginx's least_conn side by side.

    .venv/bin/python benchmarks/replicas_bench.py [--seconds 6] [--service-ms 50]

Every replica is the TEI stand-in with a fixed service time per request: each batch holds its one
backend thread for `--service-ms` (a sleep, not CPU, so two cores suffice) and holds one request
(`--max-batch-requests 1`), so one replica serves at most 1000 / service-ms requests/s. Everything
listens on 127.0.0.1. Rows:

- Scaling: 1, 2 and 4 replicas through the gateway (least-inputs). Throughput from closed-loop
  clients (4 per replica, enough to keep every replica busy); the gateway's added p50, one request
  at a time (nothing queues), direct and proxied requests in turn.
- Heterogeneous: 4 replicas, one at 2x the service time, an open-loop load at 75 % of their
  capacity; p50/p99 with least-inputs and with round-robin.
- Side by side: the same 4 replicas, OpenAI's `POST /v1/embeddings` (what all three speak), behind
  our gateway, behind Debian's nginx with `upstream` + `least_conn` + keepalive, and behind LiteLLM's
  proxy (`--litellm-venv DIR`: a virtual environment of its own, never the project's, made with
  `python3 -m venv DIR && DIR/bin/pip install 'litellm[proxy]'`; its router's `least-busy`
  strategy); req/s (closed loop, 16 clients) and added p50/p99 one request at a time, direct / ours /
  nginx / LiteLLM in turn.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))
from conftest import free_ports, wait_until  # noqa: E402
from gateway_bench import pct  # noqa: E402
from gateway_harness import EMBED_KEY, Gateway, Tei, start_gateway  # noqa: E402
from table import print_table  # noqa: E402

BODY = '{"inputs":"hello world"}'
NATIVE = ("/embed", BODY)
OPENAI = ("/v1/embeddings", '{"model":"bench","input":"hello world","encoding_format":"float"}')
LITELLM_CONF = """model_list:
{deployments}
router_settings:
  routing_strategy: least-busy
litellm_settings:
  telemetry: false
"""
LITELLM_KEY = "sk-bench-" + "0" * 32  # the proxy refuses to start without a master key
HEADERS_FOR: dict[str, dict[str, str]] = {}  # a proxy's base url → its own headers (LiteLLM's key)
LITELLM_DEPLOYMENT = """  - model_name: bench
    litellm_params:
      model: openai/bench
      api_base: {url}/v1
      api_key: {key}
"""
HEADERS = {"Authorization": f"Bearer {EMBED_KEY}", "Content-Type": "application/json"}
NGINX_CONF = """daemon off; worker_processes 1; pid {tmp}/nginx-pool.pid; error_log {tmp}/nginx-pool.log;
events {{ worker_connections 4096; }}
http {{ access_log off; client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp};
  uwsgi_temp_path {tmp}; scgi_temp_path {tmp};
  upstream pool {{ least_conn; {servers} keepalive 64; }}
  server {{ listen 127.0.0.1:{port};
    location / {{ proxy_pass http://pool; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
"""
Row = tuple[str, str, str, str]
LATENCY_WINDOWS = 3  # one-at-a-time latency runs last this many times --seconds (enough samples for a p99)


def replicas(tmp: Path, service_s: list[float]) -> list[Tei]:
    ports = free_ports(len(service_s))
    teis = [Tei(tmp, "bench", "embed", port, EMBED_KEY, knobs={"FAKE_TEI_BATCH_S": str(s)},
                args=["--max-batch-requests", "1"]) for port, s in zip(ports, service_s, strict=True)]
    for tei in teis:
        tei.start()
    for tei in teis:
        tei.wait_ready()
    return teis


def gateway_over(tmp: Path, teis: list[Tei], balance: str = "least-inputs") -> Gateway:
    urls = [t.url for t in teis]
    model = {"name": "bench", "aliases": [], "kind": "embed", "upstream": urls[0],
             "replicas": urls if len(urls) > 1 else [], "max_client_batch_size": 512, "default": True}
    gateway = start_gateway(tmp, [model], keys=(EMBED_KEY, EMBED_KEY), wait_s=30, balance=balance)
    gateway.wait_healthy()
    return gateway


def nginx_over(tmp: Path, teis: list[Tei]) -> tuple[subprocess.Popen[bytes], str]:
    (port,) = free_ports(1)
    servers = " ".join(f"server 127.0.0.1:{t.port};" for t in teis)
    (tmp / "nginx-pool.conf").write_text(NGINX_CONF.format(tmp=tmp, port=port, servers=servers))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = subprocess.Popen([nginx, "-c", str(tmp / "nginx-pool.conf"), "-e", str(tmp / "nginx-pool.err")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: _ok(url + "/health"), 10)
    return proc, url


def litellm_over(tmp: Path, teis: list[Tei], venv: Path) -> tuple[subprocess.Popen[bytes], str]:
    """LiteLLM's proxy over the replicas, from its own virtual environment; offline (no cost-map fetch)."""
    (port,) = free_ports(1)
    deployments = "".join(LITELLM_DEPLOYMENT.format(url=t.url, key=EMBED_KEY) for t in teis)
    (tmp / "litellm.yaml").write_text(LITELLM_CONF.format(deployments=deployments))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp), "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "LITELLM_LOG": "ERROR", "NO_DOCS": "True", "LITELLM_MASTER_KEY": LITELLM_KEY}
    log = open(tmp / "litellm.log", "wb")  # noqa: SIM115 (closed with the process)
    argv = [str(venv / "bin" / "litellm"), "--config", str(tmp / "litellm.yaml"), "--host", "127.0.0.1",
            "--port", str(port), "--num_workers", "1"]
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: _ok(url + "/health/liveliness"), 120)
    HEADERS_FOR[url] = {"Authorization": f"Bearer {LITELLM_KEY}", "Content-Type": "application/json"}
    return proc, url


def _ok(url: str) -> bool:
    try:
        import urllib.request
        return urllib.request.urlopen(url, timeout=1).status == 200
    except OSError:
        return False


# load ---------------------------------------------------------------------------------------------
async def closed_loop(url: str, clients: int, seconds: float, route: tuple[str, str] = NATIVE) -> tuple[float, int]:
    """(requests/s, failed) of ``clients`` clients, each sending its next request when the last answered."""
    done = failed = 0
    stop_at = time.perf_counter() + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal done, failed
        while time.perf_counter() < stop_at:
            async with session.post(url + route[0], data=route[1], headers=HEADERS_FOR.get(url, HEADERS)) as response:
                await response.read()
                done, failed = (done + 1, failed) if response.status == 200 else (done, failed + 1)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        began = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        return done / (time.perf_counter() - began), failed


async def open_loop(url: str, rate: float, seconds: float) -> tuple[list[float], int]:
    """(latencies in ms, failed) of requests sent on schedule, ``rate`` per second (no coordinated omission)."""
    latencies: list[float] = []
    failed = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def one() -> None:
            nonlocal failed
            began = time.perf_counter()
            async with session.post(url + "/embed", data=BODY, headers=HEADERS) as response:
                await response.read()
                if response.status == 200:
                    latencies.append((time.perf_counter() - began) * 1000)
                else:
                    failed += 1

        start, tasks = time.perf_counter(), []
        for i in range(int(rate * seconds)):
            await asyncio.sleep(max(start + i / rate - time.perf_counter(), 0))
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return latencies[int(rate * 0.5):], failed  # the first half second warms the pools


async def interleaved(targets: list[list[str]], seconds: float, route: tuple[str, str] = NATIVE) -> list[list[float]]:
    """Latencies (ms) per target of one request at a time, to each target in turn; a target with several
    urls (the replicas, direct) takes them in turn.

    One at a time: nothing queues anywhere, so the difference is the proxy's own cost. In turn: the
    direct and the proxied requests share the same moment's noise (a shared two-core machine), and
    "direct" visits every replica as the proxies do, so "added" compares like with like."""
    per: list[list[float]] = [[] for _ in targets]
    sent = [0] * len(targets)
    stop_at = time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        k = 0
        while time.perf_counter() < stop_at:
            urls = targets[k]
            url = urls[sent[k] % len(urls)]
            sent[k] += 1
            began = time.perf_counter()
            async with session.post(url + route[0], data=route[1], headers=HEADERS_FOR.get(url, HEADERS)) as response:
                await response.read()
                if response.status == 200:
                    per[k].append((time.perf_counter() - began) * 1000)
            k = (k + 1) % len(targets)
    return [values[5:] for values in per]  # the first few warm the pools


# the sections ---------------------------------------------------------------------------------------
def scaling(tmp: Path, args: argparse.Namespace, service_s: float) -> list[Row]:
    rows: list[Row] = []
    single = base_added = 0.0
    for n in (1, 2, 4):
        teis = replicas(tmp, [service_s] * n)
        gateway = gateway_over(tmp, teis)
        try:
            direct, through = asyncio.run(interleaved([[t.url for t in teis], [gateway.url()]],
                                                      LATENCY_WINDOWS * args.seconds))
            rps, failed = asyncio.run(closed_loop(gateway.url(), 4 * n, args.seconds))
        finally:
            gateway.stop()
            for tei in teis:
                tei.kill()
        single = single or rps
        added = pct(through, 50) - pct(direct, 50)
        if n == 1:
            base_added = added
        target = f"≥ {0.9 * n * single:.0f} (0.9 × {n} × one)"
        rows.append((f"{n} replica{'s' * (n > 1)}: requests/s", target, f"{rps:.0f} ({failed} failed)",
                     "yes" if rps >= 0.9 * n * single and not failed else "no"))
        rows.append((f"{n} replica{'s' * (n > 1)}: gateway's added p50 (ms)", "≤ one replica's + 1",
                     f"{added:.2f} (direct {pct(direct, 50):.2f})", "yes" if added <= base_added + 1 else "no"))
    return rows


def heterogeneous(tmp: Path, args: argparse.Namespace, service_s: float) -> list[Row]:
    times = [service_s, service_s, service_s, 2 * service_s]
    capacity = sum(1 / s for s in times)
    rate = 0.75 * capacity
    teis = replicas(tmp, times)
    p99: dict[str, float] = {}
    rows: list[Row] = []
    try:
        for balance in ("least-inputs", "round-robin"):
            gateway = gateway_over(tmp, teis, balance)
            try:
                latencies, failed = asyncio.run(open_loop(gateway.url(), rate, args.seconds))
            finally:
                gateway.stop()
            p99[balance] = pct(latencies, 99)
            rows.append((f"one replica at 2× service time, {rate:.0f}/s, {balance}: p50 / p99 (ms)", "—",
                         f"{pct(latencies, 50):.1f} / {pct(latencies, 99):.1f} ({failed} failed)", "—"))
    finally:
        for tei in teis:
            tei.kill()
    ratio = p99["least-inputs"] / p99["round-robin"]
    rows.append(("least-inputs p99 ÷ round-robin p99", "≤ 0.7", f"{ratio:.2f}", "yes" if ratio <= 0.7 else "no"))
    return rows


def side_by_side(tmp: Path, args: argparse.Namespace, service_s: float) -> list[Row]:
    teis = replicas(tmp, [service_s] * 4)
    rows: list[Row] = []
    results: dict[str, tuple[float, float, float, int]] = {}
    gateway = gateway_over(tmp, teis)
    proxies: dict[str, tuple[subprocess.Popen[bytes] | None, str]] = {
        "embed-launcher gateway (least-inputs)": (None, gateway.url())}
    try:
        proxies["nginx upstream least_conn"] = nginx_over(tmp, teis)
        if args.litellm_venv:
            proxies["LiteLLM proxy (least-busy)"] = litellm_over(tmp, teis, args.litellm_venv)
        names = list(proxies)
        measured = asyncio.run(interleaved([[t.url for t in teis], *([proxies[n][1]] for n in names)],
                                           LATENCY_WINDOWS * args.seconds, OPENAI))
        direct = measured[0]
        for name, through in zip(names, measured[1:], strict=True):
            rps, failed = asyncio.run(closed_loop(proxies[name][1], 16, args.seconds, OPENAI))
            if not through:
                raise SystemExit(f"{name} answered no request with 200: see {tmp}")
            results[name] = (rps, pct(through, 50) - pct(direct, 50), pct(through, 99) - pct(direct, 99), failed)
    finally:
        gateway.stop()
        for name, (proc, _) in proxies.items():
            if proc is not None:
                proc.send_signal(signal.SIGQUIT if name.startswith("nginx") else signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
        for tei in teis:
            tei.kill()
    for name, (rps, p50, p99, failed) in results.items():
        rows.append((f"{name}: req/s · added p50 / p99 (ms)", "—",
                     f"{rps:.0f} ({failed} failed) · {p50:+.2f} / {p99:+.2f}", "—"))
    ours = results["embed-launcher gateway (least-inputs)"]
    gap = ours[1] - results["nginx upstream least_conn"][1]
    rows.append(("ours minus nginx, added p50 (ms)", "≤ 1.5", f"{gap:+.2f}", "yes" if gap <= 1.5 else "no"))
    if "LiteLLM proxy (least-busy)" in results:
        lite = results["LiteLLM proxy (least-busy)"]
        better = ours[0] > lite[0] and ours[1] < lite[1] and ours[2] < lite[2]
        rows.append(("ours against LiteLLM: req/s, added p50, added p99", "better on all",
                     f"{ours[0] / lite[0]:.1f}× · {ours[1] - lite[1]:+.2f} · {ours[2] - lite[2]:+.2f} ms",
                     "yes" if better else "no"))
    else:
        rows.append(("LiteLLM side by side", "—", "skipped: --litellm-venv DIR (see the docstring)", "—"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--service-ms", type=float, default=50.0)
    parser.add_argument("--litellm-venv", type=Path, default=None,
                        help="a virtual environment with litellm[proxy] installed (never the project's)")
    parser.add_argument("--only", choices=("scaling", "heterogeneous", "side-by-side"), default=None)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="replicas-bench-"))
    service_s = args.service_ms / 1000
    rows: list[Row] = []
    if args.only in (None, "scaling"):
        rows += scaling(tmp, args, service_s)
    if args.only in (None, "heterogeneous"):
        rows += heterogeneous(tmp, args, service_s)
    if args.only not in (None, "side-by-side"):
        pass
    elif shutil.which("nginx") or Path("/usr/sbin/nginx").exists():
        rows += side_by_side(tmp, args, service_s)
    else:
        rows.append(("side by side", "—", "skipped: apt-get install -y nginx-light", "—"))
    print_table(f"Replicas benchmark, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, service time "
                f"{args.service_ms:g} ms per request; loopback only", ("measure", "target", "measured", "met"), rows,
                figures=(1, 2))


if __name__ == "__main__":
    main()
