"""The keys file's costs: the key check per request against the number of keys, and how soon a change applies.

    .venv/bin/python benchmarks/keys_bench.py [--rounds 5]

Rows:

- microseconds per key check (gateway/access.py `decide`, in process), with 0, 10, 100 and 1000 keys
  in the file: every presented key is hashed once and compared with every key in force (constant time,
  no early exit), so the cost grows with the number of keys.
- seconds from writing the keys file (an atomic rename) until a real gateway (TEI stand-ins behind it)
  accepts the new key, and until it refuses a revoked one: the poll is every 0.5 s, the target is
  <= 2 s. Median and worst of ``--rounds``.
Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests")]

from gateway_harness import start_stack, stop_stack  # noqa: E402

from embed_launcher.gateway.access import Bucket, KeyRing, decide  # noqa: E402
from embed_launcher.gateway.keyfile import KeyEntry, hash_key, render_entry  # noqa: E402

CHECKS = 5000


def check_cost(keys: int) -> float:
    """Microseconds per decide() for the last key of ``keys`` file keys (plus the default key)."""
    ring = KeyRing.build("default-key", "default-key", tuple(KeyEntry(f"k{i}", hash_key(f"key{i}"))
                                                            for i in range(keys)))
    presented = [f"key{keys - 1}" if keys else "default-key"]
    buckets: dict[str, Bucket] = {}
    start = time.perf_counter()
    for _ in range(CHECKS):
        decide(ring, presented, "embed", wall=0.0, mono=0.0, buckets=buckets)
    return (time.perf_counter() - start) / CHECKS * 1e6


def write(path: Path, entries: list[KeyEntry]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(render_entry(e) for e in entries))
    os.replace(tmp, path)


def until(url: str, key: str, status: int, since: float) -> float:
    while httpx.post(url, json={"input": "x"}, headers={"Authorization": f"Bearer {key}"}).status_code != status:
        if time.monotonic() - since > 30:
            raise SystemExit(f"no {status} for {key} within 30 s")
        time.sleep(0.01)
    return time.monotonic() - since


def apply_times(rounds: int) -> tuple[list[float], list[float]]:
    added, revoked = [], []
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        path = tmp / "keys.toml"
        write(path, [])
        stack = start_stack(tmp, env={"EMBED_API_KEYS_FILE": str(path)})
        try:
            url = stack.gateway.url("/v1/embeddings")
            for i in range(rounds):
                entry = KeyEntry(f"round{i}", hash_key(f"key-round-{i}"))
                started = time.monotonic()
                write(path, [entry])
                added.append(until(url, f"key-round-{i}", 200, started))
                started = time.monotonic()
                write(path, [])
                revoked.append(until(url, f"key-round-{i}", 401, started))
        finally:
            stop_stack(stack)
    return added, revoked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print("| Measure | Value |")
    print("|---|---|")
    for keys in (0, 10, 100, 1000):
        print(f"| key check, {keys} keys in the file | {check_cost(keys):.1f} µs |")
    added, revoked = apply_times(args.rounds)
    for name, times in (("a new key accepted", added), ("a revoked key refused", revoked)):
        print(f"| file written → {name} (median / worst of {args.rounds}) | "
              f"{statistics.median(times):.2f} s / {max(times):.2f} s |")


if __name__ == "__main__":
    main()
