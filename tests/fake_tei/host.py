"""What TEI's model backend does to the host while it loads, so sandboxes (systemd, containers) meet it.

candle memory-maps the safetensors (memmap2) and ONNX Runtime maps `model.onnx` and its external
data; both size their thread pools from the CPU set and the cgroup quota (num_cpus reads
/proc/self/cgroup and /proc/self/mountinfo, ORT's cpuinfo reads /proc/cpuinfo), and tokio starts
worker threads. A sandbox that forbids any of this must make the stand-in fail as TEI would.
"""

from __future__ import annotations

import mmap
import os
import threading
from pathlib import Path

WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model.bin", "*.onnx", "*.onnx_data", "onnx/*.onnx", "onnx/*.onnx_data")
PROC_FILES = ("/proc/self/cgroup", "/proc/self/mountinfo", "/proc/self/status", "/proc/cpuinfo")


def weight_files(root: Path) -> list[Path]:
    """The weight files present in a model directory (any format)."""
    found = {p for pattern in WEIGHT_PATTERNS for p in root.glob(pattern) if p.is_file()}
    return sorted(found)


def map_weights(root: Path) -> int:
    """Map every weight file read-only and touch its first and last byte; return the bytes mapped."""
    total = 0
    for path in weight_files(root):
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                continue
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                _ = mapped[0], mapped[size - 1]
        total += size
    return total


def read_host_facts() -> int:
    """Read what thread-pool sizing reads; return the usable CPU count."""
    for name in PROC_FILES:
        Path(name).read_bytes()
    return len(os.sched_getaffinity(0))


def start_workers(count: int) -> list[threading.Thread]:
    """Idle worker threads, like tokio's runtime and the tokenization pool."""
    stop = threading.Event()
    workers = [threading.Thread(target=stop.wait, daemon=True, name=f"worker-{i}") for i in range(count)]
    for worker in workers:
        worker.start()
    return workers
