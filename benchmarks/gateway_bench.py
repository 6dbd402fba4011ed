"""The gateway's costs: the same load direct to a backend and through the gateway, side by side (issue 10 §5).

    .venv/bin/python benchmarks/gateway_bench.py [--seconds 5] [--rate 200]

Needs Debian's `wrk` (load) and `nginx` (the canned backend): `apt-get install -y wrk nginx-light`.
Without wrk the throughput rows are skipped (said so in the table); without nginx the benchmark stops.
Everything listens on 127.0.0.1 only. Rows:

- requests/s, single-text `/v1/embeddings`, wrk (1 thread, 64 connections): nginx direct, and through
  the gateway with 1 and 2 workers. nginx answers a canned OpenAI body from memory (`return 200`),
  far faster than TEI's own HTTP layer, so the backend is never what limits the gateway.
- added latency p50/p99 at a fixed rate: an open-loop asyncio client sends `--rate` requests/s on
  schedule (not when the last answer came: no coordinated omission), direct and through the gateway.
- MB/s of a 512 × 1024-float `/embed` answer (11 MB of JSON): wrk, 4 connections.
- gateway RSS per worker after the load (psutil, the largest worker).
- failed requests while the backend is SIGKILLed under load: the TEI stand-in, killed 1 s into 16
  concurrent clients and relaunched on the same port 1 s later; direct versus through the gateway.
  Through the gateway only the requests inside TEI when it died may fail (502: never replayed, as they
  may be what killed it), so at most one per client; every later one waits for the replacement.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from conftest import free_ports, wait_until  # noqa: E402
from gateway_harness import EMBED_KEY, Gateway, Tei, start_gateway  # noqa: E402
from table import print_table  # noqa: E402  (this folder: the script's own)

SMALL_BODY = json.dumps({"input": "hello world", "model": "bench"})
NGINX_CONF = """daemon off; worker_processes 1; pid {tmp}/nginx.pid; error_log {tmp}/error.log;
events {{ worker_connections 4096; }}
http {{ access_log off; client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp};
  uwsgi_temp_path {tmp}; scgi_temp_path {tmp}; keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{port}; default_type application/json;
    location = /health {{ return 200 ""; }}
    # Static files answer POST with 405; error_page turns that into a GET of the canned body.
    location = /v1/embeddings {{ error_page 405 =200 /small.json; return 405; }}
    location = /embed {{ error_page 405 =200 /big.json; return 405; }}
    location = /small.json {{ root {tmp}; }}
    location = /big.json {{ root {tmp}; }}
  }}
}}
"""


def canned_small() -> str:
    vector = [round(random.uniform(-0.1, 0.1), 8) for _ in range(384)]
    return json.dumps({"object": "list", "data": [{"object": "embedding", "embedding": vector, "index": 0}],
                       "model": "bench", "usage": {"prompt_tokens": 4, "total_tokens": 4}}, separators=(",", ":"))


def start_nginx(tmp: Path, port: int) -> subprocess.Popen[bytes]:
    big = [[round(random.uniform(-0.1, 0.1), 8) for _ in range(1024)] for _ in range(512)]
    (tmp / "big.json").write_text(json.dumps(big, separators=(",", ":")))
    (tmp / "small.json").write_text(canned_small())
    (tmp / "nginx.conf").write_text(NGINX_CONF.format(tmp=tmp, port=port))
    proc = subprocess.Popen([shutil.which("nginx") or "nginx", "-c", str(tmp / "nginx.conf"), "-e", str(tmp / "e.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    wait_until(lambda: _ok(f"http://127.0.0.1:{port}/health"), 10)
    return proc


def _ok(url: str) -> bool:
    try:
        import urllib.request
        return urllib.request.urlopen(url, timeout=1).status == 200
    except OSError:
        return False


def gateway_over(tmp: Path, upstream: str, workers: int, batch: int = 1024) -> Gateway:
    model = {"name": "bench", "aliases": [], "kind": "embed", "upstream": upstream, "max_client_batch_size": batch,
             "default": True}
    gateway = start_gateway(tmp, [model], keys=(EMBED_KEY, EMBED_KEY), workers=workers, wait_s=30)
    gateway.wait_healthy()
    return gateway


# load generators ----------------------------------------------------------------------------------
def wrk(url: str, body: str, seconds: float, connections: int) -> dict[str, float]:
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(f'wrk.method = "POST"\nwrk.body = {json.dumps(body)}\n'
                      f'wrk.headers["Content-Type"] = "application/json"\n'
                      f'wrk.headers["Authorization"] = "Bearer {EMBED_KEY}"\n')
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{round(seconds)}s", "-s", str(script), url],
                         capture_output=True, text=True, check=True).stdout
    script.unlink()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out)
    scale = {"B": 1e-6, "KB": 1e-3, "MB": 1.0, "GB": 1e3}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "mbps": float(transfer.group(1)) * scale[transfer.group(2)] * 1.048576 if transfer else 0.0,
            "errors": float(errors.group(1)) if errors else 0.0}


async def fixed_rate(url: str, rate: float, seconds: float) -> list[float]:
    """Latencies (ms) of requests sent on a fixed schedule, ``rate`` per second, each on its own task."""
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {EMBED_KEY}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def one() -> None:
            began = time.perf_counter()
            async with session.post(url, data=SMALL_BODY, headers=headers) as response:
                await response.read()
                if response.status == 200:
                    latencies.append((time.perf_counter() - began) * 1000)

        start, tasks = time.perf_counter(), []
        for i in range(int(rate * seconds)):
            await asyncio.sleep(max(start + i / rate - time.perf_counter(), 0))
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return latencies[int(rate * 0.5):]  # the first half second warms the pools


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * p / 100), len(ordered) - 1)]


async def under_kill(url: str, tei: Tei, seconds: float = 4.0, clients: int = 16) -> tuple[int, int]:
    """(ok, failed) for ``clients`` looping clients while ``tei`` is SIGKILLed and relaunched on its port."""
    ok = failed = 0
    headers = {"Authorization": f"Bearer {EMBED_KEY}"}
    stop_at = time.monotonic() + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal ok, failed
        while time.monotonic() < stop_at:
            try:
                async with session.post(url, json={"inputs": "hello"}, headers=headers) as response:
                    await response.read()
                    ok, failed = (ok + 1, failed) if response.status == 200 else (ok, failed + 1)
            except aiohttp.ClientError:
                failed += 1
                await asyncio.sleep(0.01)

    async def killer() -> None:
        await asyncio.sleep(1.0)
        tei.kill()
        await asyncio.sleep(1.0)
        await asyncio.to_thread(lambda: tei.start().wait_ready())

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        await asyncio.gather(killer(), *(client(session) for _ in range(clients)))
    return ok, failed


def worker_rss_mb(pid: int) -> float:
    procs = psutil.Process(pid).children() or [psutil.Process(pid)]
    return max(p.memory_info().rss for p in procs) / 2**20


# the run ------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=200.0)
    args = parser.parse_args()
    if not shutil.which("nginx"):
        sys.exit("nginx is needed for the canned backend: apt-get install -y nginx-light")
    have_wrk = shutil.which("wrk") is not None
    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    rows: list[tuple[str, str, str, str, str]] = []
    (port,) = free_ports(1)
    nginx = start_nginx(tmp, port)
    backend = f"http://127.0.0.1:{port}"
    rss: list[float] = []
    try:
        for workers in (1, 2):
            gateway = gateway_over(tmp, backend, workers)
            try:
                if have_wrk:
                    direct = wrk(backend + "/v1/embeddings", SMALL_BODY, args.seconds, 64)
                    through = wrk(gateway.url("/v1/embeddings"), SMALL_BODY, args.seconds, 64)
                    rows.append((f"requests/s, one text, {workers} worker{'s' * (workers > 1)}", "≥ 3000",
                                 f"{direct['rps']:.0f}", f"{through['rps']:.0f}",
                                 "yes" if through["rps"] >= 3000 and not through["errors"] else "no"))
                if workers == 1:
                    rows += latency_rows(backend, gateway.url(), args)
                    if have_wrk:
                        direct = wrk(backend + "/embed", '{"inputs":["x"]}', args.seconds, 4)
                        through = wrk(gateway.url("/embed"), '{"inputs":["x"]}', args.seconds, 4)
                        rows.append(("MB/s, 512 × 1024 floats (11 MB JSON)", "—", f"{direct['mbps']:.0f}",
                                     f"{through['mbps']:.0f}", "—"))
                rss.append(worker_rss_mb(gateway.proc.pid))
            finally:
                gateway.stop()
        rows.append(("gateway RSS per worker (MB, largest)", "≤ 60", "—", f"{max(rss):.1f}",
                     "yes" if max(rss) <= 60 else "no"))
    finally:
        nginx.send_signal(signal.SIGQUIT)
        nginx.wait(10)
    rows.append(kill_row(tmp))
    if not have_wrk:
        rows.insert(0, ("requests/s and MB/s", "—", "skipped: wrk not installed", "apt-get install -y wrk", "—"))
    print_table(f"Gateway benchmark, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; loopback only",
                ("measure", "target", "direct", "through the gateway", "met"), rows, figures=(1, 2, 3))


def latency_rows(backend: str, gateway: str, args: argparse.Namespace) -> list[tuple[str, str, str, str, str]]:
    direct = asyncio.run(fixed_rate(backend + "/v1/embeddings", args.rate, args.seconds))
    through = asyncio.run(fixed_rate(gateway + "/v1/embeddings", args.rate, args.seconds))
    rows = []
    for p, target in ((50, 1.0), (99, 3.0)):
        added = pct(through, p) - pct(direct, p)
        rows.append((f"added latency p{p} at {args.rate:.0f}/s (ms)", f"≤ {target:g}",
                     f"{pct(direct, p):.2f}", f"{pct(through, p):.2f} (+{added:.2f})",
                     "yes" if added <= target else "no"))
    return rows


def kill_row(tmp: Path) -> tuple[str, str, str, str, str]:
    (port,) = free_ports(1)
    tei = Tei(tmp, "bench", "embed", port, EMBED_KEY).start().wait_ready()
    gateway = gateway_over(tmp, tei.url, 1)
    try:
        ok_direct, failed_direct = asyncio.run(under_kill(tei.url + "/embed", tei))
        tei.wait_ready()
        ok_through, failed_through = asyncio.run(under_kill(gateway.url("/embed"), tei))
    finally:
        gateway.stop()
        tei.kill()
    clients = 16  # under_kill's default: at most the one request each had inside TEI may fail
    return ("failed requests, backend SIGKILLed + relaunched", f"≤ {clients} (in TEI)",
            f"{failed_direct} of {ok_direct + failed_direct}", f"{failed_through} of {ok_through + failed_through}",
            "yes" if failed_through <= clients else "no")


if __name__ == "__main__":
    main()
