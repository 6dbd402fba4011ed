"""What request ids and JSON logs add to each request through the gateway, measured in process (issue 20).

    .venv/bin/python benchmarks/reqid_bench.py [--number 100000]

Rows: the id chosen from the headers (none sent: a new uuid4; a client's X-Request-Id; a traceparent),
the headers added to the upstream request, and the access line in each format (only with
EMBED_GATEWAY_ACCESS_LOG=true). Each is the best of 5 runs of ``--number`` calls, in microseconds;
compare with the gateway's own cost per request (benchmarks/gateway_bench.py: hundreds of µs).
"""

from __future__ import annotations

import argparse
import platform
import timeit
from collections.abc import Callable

from multidict import CIMultiDict

from embed_launcher.gateway import logs

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
BASE_HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer k"}


def best_us(action: Callable[[], object], number: int) -> float:
    return min(timeit.repeat(action, number=number, repeat=5)) / number * 1e6


def chooser(headers: CIMultiDict[str]) -> Callable[[], object]:
    return lambda: logs.RequestLog.of(headers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--number", type=int, default=100_000)
    args = parser.parse_args()
    sent = {
        "none sent (new uuid4)": CIMultiDict({"Authorization": "Bearer k"}),
        "X-Request-Id sent": CIMultiDict({"Authorization": "Bearer k", "X-Request-Id": "client-42"}),
        "traceparent sent": CIMultiDict({"Authorization": "Bearer k", "traceparent": TRACEPARENT}),
    }
    rows = [(f"choose the id: {name}", best_us(chooser(headers), args.number)) for name, headers in sent.items()]
    log = logs.RequestLog.of(sent["traceparent sent"])
    rows.append(("upstream headers (id + traceparent)",
                 best_us(lambda: {**BASE_HEADERS, **log.upstream_headers()}, args.number)))
    log.answered_by(0, 2)
    for fmt in ("text", "json"):
        logs.configure(fmt)
        rows.append((f"access line, {fmt}", best_us(lambda: logs.access_line(
            "10.0.0.7", "POST", "/v1/embeddings", "1.1", 200, 9911, 0.0123, "search-app", log), args.number)))
    print(f"\nRequest ids and log lines, Python {platform.python_version()}, best of 5 × {args.number}\n")
    print("| work per request | µs |\n|---|---:|")
    for name, micros in rows:
        print(f"| {name} | {micros:.2f} |")


if __name__ == "__main__":
    main()
