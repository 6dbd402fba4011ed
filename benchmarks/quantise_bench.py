"""What Cohere's `embedding_types` cost the gateway: each encoding of a batch of TEI's float vectors.

    .venv/bin/python benchmarks/quantise_bench.py

Times embed_launcher.gateway.dialects.cohere's encoders (pure Python, in the gateway's event loop) on
Cohere's largest batch, 96 vectors, at 384 and 1024 dimensions; prints a table of milliseconds per
batch (best of 5). A real TEI spends tens of milliseconds embedding such a batch on a GPU, more on a CPU.
"""

from __future__ import annotations

import random
import time

from embed_launcher.gateway.dialects.cohere import ENCODERS

BATCH, REPEATS = 96, 5


def best_ms(encode: object, vectors: list[list[float]]) -> float:
    times = []
    for _ in range(REPEATS):
        began = time.perf_counter()
        for vector in vectors:
            encode(vector)  # type: ignore[operator]
        times.append(time.perf_counter() - began)
    return min(times) * 1000


def main() -> None:
    rng = random.Random(18)
    print(f"{'type':<8} " + " ".join(f"{f'{d} dims (ms)':>14}" for d in (384, 1024)))
    batches = {d: [[rng.gauss(0, d ** -0.5) for _ in range(d)] for _ in range(BATCH)] for d in (384, 1024)}
    for name, encode in ENCODERS.items():
        print(f"{name:<8} " + " ".join(f"{best_ms(encode, batches[d]):>14.2f}" for d in (384, 1024)))


if __name__ == "__main__":
    main()
