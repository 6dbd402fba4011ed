"""The launcher's own costs against design §7, measured with the TEI and Hub stand-ins on 127.0.0.1.

    .venv/bin/python benchmarks/launcher_bench.py [--reps 5] [--idle 10] [--getkey 20]

Each repetition starts `python -m embed_launcher` (both services, default timings: restart delay
1 s, stop timeout 8 s, health interval 10 s) against the TEI stand-in (0.3 s model load) and the
Hub stand-in, then measures: Ready → ready banner, RSS, SIGKILL of the embeddings child → its
replacement's fork, and SIGTERM → launcher exit. The last repetition also samples idle CPU.
Then `embed_manage --getkey` wall time and downloaded bytes ÷ TEI's file set
(benchmarks/download_ratio.py). Prints a Markdown table; takes about a minute. No internet access.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import download_ratio  # noqa: E402 - also puts tests/ on sys.path
from conftest import free_port, make_tei  # noqa: E402
from fake_hub.server import HubStandIn  # noqa: E402

BANNER = "Text embeddings & reranking server is ready"
READY_AGAIN = "Embeddings server is ready again"
KEY = "bench-key"
CLK_TCK = os.sysconf("SC_CLK_TCK")
T = TypeVar("T")
DECIMALS = {"ms": 1, "s": 3, "MB": 1, "%": 2, "×": 2}


@dataclass
class Row:
    """One measured quantity: its samples, the target it must meet, and the design's aim."""

    name: str
    unit: str
    target: float
    aim: str
    original: str
    samples: list[float] = field(default_factory=list)

    def cells(self) -> list[str]:
        if not self.samples:
            return [self.name, f"≤ {self.target:g} {self.unit}", self.aim, self.original, "—", "—", "not measured"]
        med, worst = statistics.median(self.samples), max(self.samples)
        verdict = "yes" if worst <= self.target else ("median only" if med <= self.target else "**no**")
        places = DECIMALS[self.unit]
        return [self.name, f"≤ {self.target:g} {self.unit}", self.aim, self.original,
                f"{med:.{places}f} {self.unit}", f"{worst:.{places}f} {self.unit}", verdict]  # fmt: skip


@dataclass
class Line:
    """A line of launcher output and the wall time it reached us."""

    at: float
    text: str


class Run:
    """The launcher as a subprocess whose output lines are timestamped on arrival by a reader thread."""

    def __init__(self, env: dict[str, str], data_dir: Path) -> None:
        self.data_dir = data_dir
        self.lines: queue.SimpleQueue[Line] = queue.SimpleQueue()
        self.seen: list[Line] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "embed_launcher"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in iter(self.proc.stdout.readline, b""):
            self.lines.put(Line(time.time(), raw.decode("utf-8", "replace").rstrip("\n")))

    def wait_line(self, predicate: Callable[[str], bool], timeout_s: float = 30.0) -> Line:
        """The first line (seen or still to come) matching ``predicate``; fails at the deadline."""
        for line in self.seen:
            if predicate(line.text):
                return line
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(line)
            if predicate(line.text):
                return line
        tail = "\n".join(x.text for x in self.seen[-20:])
        raise SystemExit(f"launcher output never matched within {timeout_s} s; last lines:\n{tail}")

    def child_pid(self, name: str) -> int | None:
        try:
            status = json.loads((self.data_dir / ".status.json").read_text())
        except (OSError, ValueError):
            return None  # mid-rename, or not yet written
        pid = status["services"][name]["pid"]
        return int(pid) if pid else None

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def tei_time(text: str) -> float:
    """Wall time of a TEI log line from its RFC 3339 timestamp (`[embed] 2026-…Z  INFO …`)."""
    stamp = text.split()[1]
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def tei_ready(name: str) -> Callable[[str], bool]:
    """Matches the relayed `Ready` line of child ``name``."""
    return lambda text: text.startswith(f"[{name}]") and text.endswith(" Ready")


def fork_time_boot(pid: int) -> float:
    """When ``pid`` was forked, in CLOCK_BOOTTIME seconds (/proc starttime, 10 ms ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[19]) / CLK_TCK


def is_running(process: psutil.Process) -> bool:
    """Alive and not a zombie (a zombie child has exited; only its status waits to be reaped)."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def poll(predicate: Callable[[], T | None], timeout_s: float, interval_s: float = 0.002) -> T:
    """``predicate``'s first truthy value, polled with a deadline."""
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() >= deadline:
            raise SystemExit(f"timed out after {timeout_s} s waiting for {predicate}")
        time.sleep(interval_s)
    return value


class Bench:
    """All the rows, and the stand-ins the launcher runs against."""

    def __init__(self, hub: HubStandIn, tmp: Path) -> None:
        self.hub, self.tmp = hub, tmp
        (tmp / "bin").mkdir()
        self.tei = make_tei(tmp / "bin", load_s=0.3)
        self.data_dir = tmp / "data"
        self.notes: list[str] = []
        self.rows = {
            "ready": Row("ready banner after TEI's `Ready`", "ms", 100, "20 ms", "675 ms"),
            "restart": Row("crash → replacement spawned (delay 1 s)", "s", 1.1, "≈ 1 s", "never"),
            "stop": Row("graceful stop (SIGTERM → exit)", "s", 1.0, "0.1 s", "0.064 s"),
            "rss": Row("launcher RSS, both services", "MB", 40, "25 MB", "3.2 MB"),
            "cpu": Row("launcher idle CPU", "%", 1.0, "—", "—"),
            "getkey": Row("`embed_manage --getkey`", "ms", 150, "60 ms", "10.8 ms"),
            "download": Row("downloaded ÷ TEI file set", "×", 1.0, "1.00", "2.00–8.98"),
        }

    def env(self) -> dict[str, str]:
        ports = ("EMBED_PORT", "RERANK_PORT", "EMBED_PROMETHEUS_PORT", "RERANK_PROMETHEUS_PORT")
        return {
            "PATH": os.environ.get("PATH", os.defpath),
            "EMBED_DATA_DIR": str(self.data_dir),
            "EMBED_ENV_FILE": str(self.tmp / "absent.env"),
            "EMBED_TEI_BIN": str(self.tei),
            "EMBED_HOST": "127.0.0.1",
            "EMBED_SERVER_ADDR": "127.0.0.1",
            "EMBED_DATA_PERSISTENT": "true",
            "HF_ENDPOINT": self.hub.endpoint,
            "RERANK_ENABLED": "true",
            "EMBED_API_KEY": KEY,
            **{name: str(free_port()) for name in ports},
        }

    @contextmanager
    def launcher(self) -> Iterator[Run]:
        run = Run(self.env(), self.data_dir)
        try:
            yield run
        finally:
            run.stop()

    def repetition(self, idle_s: float) -> None:
        """One start → ready → crash → heal → stop cycle, recording one sample per row."""
        with self.launcher() as run:
            readies = [run.wait_line(tei_ready(name)) for name in ("embed", "rerank")]
            banner = run.wait_line(lambda t: BANNER in t)
            self.rows["ready"].samples.append(1000 * (banner.at - max(tei_time(r.text) for r in readies)))
            self.rows["rss"].samples.append(psutil.Process(run.proc.pid).memory_info().rss / 2**20)
            self.crash_and_heal(run)
            if idle_s:
                self.idle_cpu(run, idle_s)
            self.graceful_stop(run)

    def graceful_stop(self, run: Run) -> None:
        """SIGTERM → launcher exit; also when each child was gone, to tell the launcher's share from TEI's."""
        children = [psutil.Process(pid) for pid in (run.child_pid("embed"), run.child_pid("rerank")) if pid]
        started = time.monotonic()
        run.proc.send_signal(signal.SIGTERM)
        gone: dict[int, float] = {}
        while run.proc.poll() is None and time.monotonic() - started < 30:
            for child in children:
                if child.pid not in gone and not is_running(child):
                    gone[child.pid] = time.monotonic() - started
            time.sleep(0.001)
        elapsed = time.monotonic() - started
        self.rows["stop"].samples.append(elapsed)
        if run.proc.returncode != 0:
            raise SystemExit(f"launcher exited {run.proc.returncode} after SIGTERM")
        self.notes.append(f"stop {elapsed * 1000:.0f} ms; children gone at "
                          + ", ".join(f"{t * 1000:.0f}" for t in sorted(gone.values())) + " ms")  # fmt: skip

    def crash_and_heal(self, run: Run) -> None:
        """SIGKILL the embeddings child; time until its replacement was forked, then wait until it is ready."""
        old = poll(lambda: run.child_pid("embed"), 5)
        killed_at = time.clock_gettime(time.CLOCK_BOOTTIME)
        os.kill(old, signal.SIGKILL)
        new = poll(lambda: pid if (pid := run.child_pid("embed")) not in (None, old) else None, 10)
        self.rows["restart"].samples.append(fork_time_boot(new) - killed_at)
        run.wait_line(lambda t: READY_AGAIN in t)
        self.rows["rss"].samples.append(psutil.Process(run.proc.pid).memory_info().rss / 2**20)

    def idle_cpu(self, run: Run, seconds: float) -> None:
        """CPU time the launcher alone uses while both services idle (default 10 s health interval)."""
        launcher = psutil.Process(run.proc.pid)
        before, started = launcher.cpu_times(), time.monotonic()
        time.sleep(seconds)  # the measurement window itself, not synchronisation
        after, elapsed = launcher.cpu_times(), time.monotonic() - started
        used = (after.user - before.user) + (after.system - before.system)
        self.rows["cpu"].samples.append(100 * used / elapsed)

    def getkey(self, count: int) -> None:
        """Wall time of `embed_manage --getkey`, as `docker exec` runs it."""
        script = Path(sys.executable).parent / "embed_manage"
        argv = [str(script)] if script.exists() else [sys.executable, "-m", "embed_launcher.manage"]
        env = {"PATH": os.environ.get("PATH", os.defpath), "EMBED_DATA_DIR": str(self.data_dir)}
        for _ in range(count):
            started = time.monotonic()
            result = subprocess.run([*argv, "--getkey"], env=env, capture_output=True, text=True, timeout=30)
            self.rows["getkey"].samples.append(1000 * (time.monotonic() - started))
            if result.stdout != KEY:
                raise SystemExit(f"embed_manage --getkey printed {result.stdout!r} (exit {result.returncode})")

    def download(self) -> None:
        """Bytes our pull fetched ÷ TEI's file set, per benchmark repository and backend."""
        for repo_id in download_ratio.BENCHMARK_REPOS:
            for backend in ("onnx", "candle"):
                need = sum(self.hub.repos[repo_id].tei_files(backend).values())
                got = download_ratio.ours(self.hub, repo_id, backend, self.tmp / f"pull-{backend}")
                self.rows["download"].samples.append(got / need)

    def table(self) -> str:
        head = ["measure", "target", "design aim", "original", "measured (median)", "max", "met"]
        lines = ["| " + " | ".join(head) + " |", "|---|---:|---:|---:|---:|---:|---|"]
        return "\n".join(lines + ["| " + " | ".join(r.cells()) + " |" for r in self.rows.values()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5, help="launcher start/crash/stop cycles (default 5)")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU sampling (default 10)")
    parser.add_argument("--getkey", type=int, default=20, help="embed_manage --getkey runs (default 20)")
    args = parser.parse_args()
    began = time.monotonic()
    with HubStandIn() as hub, tempfile.TemporaryDirectory() as tmp:
        bench = Bench(hub, Path(tmp))
        for rep in range(args.reps):
            bench.repetition(args.idle if rep == args.reps - 1 else 0.0)
        bench.getkey(args.getkey)
        bench.download()
    print(f"{args.reps} launcher runs, {args.getkey} --getkey runs, {time.monotonic() - began:.0f} s in all;"
          f" Python {sys.version.split()[0]}, {os.cpu_count()} CPUs.\n")  # fmt: skip
    print(bench.table())
    print("\nPer run: " + "; ".join(bench.notes) + ".")


if __name__ == "__main__":
    main()
