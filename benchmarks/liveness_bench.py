"""Busy is not dead, measured: restarts of a busy TEI under sustained load, and how fast a hung one is found.

    .venv/bin/python benchmarks/liveness_bench.py [--load-s 20] [--batch-s 1.5] [--reps 3]

Scaled timings (health interval 0.5 s, so a 0.5 s health timeout; the stand-in's batches take
--batch-s, three times that timeout by default). Two scenarios against the TEI stand-in's single
backend thread, each run by the real launcher:

1. Sustained load: 3 clients post /v1/embeddings for --load-s seconds. The launcher's restarts are
   counted; beside it, this script probes /health exactly as the old rule did (a check every
   interval, 3 silent or failed checks in a row = a restart) and counts the restarts that rule
   would have made in the same run.
2. Hung backend: the stand-in's health file says "hung"; the time until the launcher logs
   "is hung" is measured, with EMBED_HANG_TIMEOUT=3.

Prints a Markdown table. Loopback only.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from conftest import FAKE_TEI, free_ports  # noqa: E402
from fake_hub.server import HubStandIn  # noqa: E402
from live_client import Load, embed, live_services  # noqa: E402

from embed_launcher.supervision.liveness import Answer  # noqa: E402
from embed_launcher.supervision.probe import check_health  # noqa: E402

INTERVAL_S = 0.5
OLD_RULE_FAILURES = 3


def tei_wrapper(directory: Path, batch_s: float, health_file: Path) -> Path:
    path = directory / "tei"
    path.write_text(
        "#!/bin/sh\n"
        f"export FAKE_TEI_LOAD_S=0.1 FAKE_TEI_BATCH_S={batch_s} FAKE_TEI_HEALTH_FILE={shlex.quote(str(health_file))}\n"
        f'exec {shlex.quote(sys.executable)} {shlex.quote(str(FAKE_TEI))} "$@"\n'
    )
    path.chmod(0o755)
    return path


class Launcher:
    """One launcher run (embeddings only) in a temporary data directory."""

    hub_endpoint = ""  # the Hub stand-in's, set by main()

    def __init__(self, work: Path, tei: Path, **env: str) -> None:
        port, prometheus = free_ports(2)
        self.port = port
        self.data = work / f"data-{port}"
        self.log = work / f"launcher-{port}.log"
        full = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "EMBED_DATA_DIR": str(self.data),
            "EMBED_ENV_FILE": str(work / "none.env"), "EMBED_TEI_BIN": str(tei), "EMBED_HOST": "127.0.0.1",
            "EMBED_SERVER_ADDR": "127.0.0.1", "EMBED_LOCAL_ONLY": "false", "EMBED_DATA_PERSISTENT": "true",
            "EMBED_API_KEY": "", "EMBED_PORT": str(port), "EMBED_PROMETHEUS_PORT": str(prometheus),
            "EMBED_HEALTH_INTERVAL": str(INTERVAL_S), "EMBED_RESTART_DELAY": "0.3", "HF_ENDPOINT": self.hub_endpoint,
            **env,
        }  # fmt: skip
        self.data.mkdir()
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "embed_launcher"], env=full, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, text: str, timeout_s: float) -> float:
        deadline = time.monotonic() + timeout_s
        while text not in self.output():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"no {text!r} in time:\n{self.output()[-2000:]}")
            time.sleep(0.02)
        return time.monotonic()

    def restarts(self) -> int:
        return int(live_services(self.data)["embed"]["restarts"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def post(port: int) -> int:
    return embed(port, None, "hello", timeout_s=60)


def sustained_load(work: Path, batch_s: float, load_s: float) -> tuple[int, int, int, int]:
    """(old-rule restarts, launcher restarts, requests answered 200, requests failed)."""
    tei = tei_wrapper(work, batch_s, work / "no-such-file")
    run = Launcher(work, tei, EMBED_HANG_TIMEOUT="600")
    try:
        run.wait_for("Text embeddings server is ready", 60)
        stop_at = time.monotonic() + load_s
        with Load(lambda: post(run.port), threads=3) as load:
            old_restarts, streak = 0, 0
            while time.monotonic() < stop_at:
                started = time.monotonic()
                ok = check_health(f"http://127.0.0.1:{run.port}/health", INTERVAL_S) is Answer.OK
                streak = 0 if ok else streak + 1
                if streak >= OLD_RULE_FAILURES:
                    old_restarts, streak = old_restarts + 1, 0
                time.sleep(max(0.0, INTERVAL_S - (time.monotonic() - started)))  # a probe period, not a wait
        return old_restarts, run.restarts(), load.ok, len(load.failed)
    finally:
        run.stop()


def hang_detection(work: Path, batch_s: float, hang_timeout_s: float) -> float:
    """Seconds from the backend hanging to the launcher's "is hung" line."""
    switch = work / f"health-{time.monotonic_ns()}"
    run = Launcher(work, tei_wrapper(work, batch_s, switch), EMBED_HANG_TIMEOUT=str(hang_timeout_s))
    try:
        run.wait_for("Text embeddings server is ready", 60)
        switch.write_text("hung")
        hung_at = time.monotonic()
        for _ in range(3):
            threading.Thread(target=post, args=(run.port,), daemon=True).start()
        return run.wait_for("Embeddings server is hung", 60) - hung_at
    finally:
        run.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--load-s", type=float, default=20.0)
    parser.add_argument("--batch-s", type=float, default=1.5)
    parser.add_argument("--hang-timeout-s", type=float, default=3.0)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, HubStandIn() as hub:
        Launcher.hub_endpoint = hub.endpoint
        work = Path(tmp)
        loads = [sustained_load(work, args.batch_s, args.load_s) for _ in range(args.reps)]
        hangs = [hang_detection(work, args.batch_s, args.hang_timeout_s) for _ in range(args.reps)]
    old = [r[0] for r in loads]
    new = [r[1] for r in loads]
    served, failed = sum(r[2] for r in loads), sum(r[3] for r in loads)
    print(f"{args.reps} runs; batches of {args.batch_s:g} s (3× the {INTERVAL_S:g} s health timeout), "
          f"{args.load_s:g} s of load by 3 clients; EMBED_HANG_TIMEOUT={args.hang_timeout_s:g} s.\n")
    print("| measure | old rule (3 slow /health = restart) | now | target |")
    print("|---|---:|---:|---:|")
    print(f"| restarts of a busy TEI under sustained load (per run) | {statistics.median(old):g} (max {max(old)}) "
          f"| {statistics.median(new):g} (max {max(new)}) | 0 |")
    print(f"| requests answered / failed during the load (all runs) | | {served} / {failed} | all / 0 |")
    print(f"| hung TEI detected after (s; median / max) | ≈ {OLD_RULE_FAILURES * INTERVAL_S:g}, but a busy one "
          f"too | {statistics.median(hangs):.2f} / {max(hangs):.2f} | ≤ EMBED_HANG_TIMEOUT + one check "
          f"({args.hang_timeout_s + 3 * INTERVAL_S:g}) |")


if __name__ == "__main__":
    main()
