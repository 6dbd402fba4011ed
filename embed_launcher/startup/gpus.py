"""Which GPUs the launcher may use: EMBED_GPUS, else CUDA_VISIBLE_DEVICES, else what `nvidia-smi -L` lists."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence

SMI_TIMEOUT_S = 10.0  # nvidia-smi takes a second or two on a cold driver; a hung one must not hold up start
_SMI_LINE = re.compile(r"GPU (\d+): ")  # "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-...)"; MIG lines are indented
NO_DEVICES = ("", "-1", "none", "nodevfiles")  # CUDA_VISIBLE_DEVICES values that hide every GPU


def parse_smi_list(text: str) -> tuple[str, ...]:
    """The GPU indices in `nvidia-smi -L` output (pure)."""
    return tuple(m.group(1) for line in text.splitlines() if (m := _SMI_LINE.match(line)))


def visible_devices(value: str) -> tuple[str, ...]:
    """CUDA_VISIBLE_DEVICES as a list of ids (pure); CUDA ignores everything after an empty entry."""
    if value.strip().lower() in NO_DEVICES:
        return ()
    ids: list[str] = []
    for part in value.split(","):
        part = part.strip()
        if not part or part == "-1":
            break
        ids.append(part)
    return tuple(ids)


def run_smi(path: str) -> str:
    """`nvidia-smi -L`'s output, or "" when it is missing, fails or hangs (then this is a CPU host)."""
    smi = shutil.which("nvidia-smi", path=path)
    if smi is None:
        return ""
    try:
        done = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=SMI_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout if done.returncode == 0 else ""


def usable_gpus(
    chosen: Sequence[str] | None,
    environ: Mapping[str, str],
    smi: Callable[[str], str] = run_smi,
) -> tuple[tuple[str, ...], str]:
    """(GPU ids, where they came from). ``chosen`` is EMBED_GPUS (None when unset)."""
    if chosen is not None:
        return tuple(chosen), "EMBED_GPUS"
    if "CUDA_VISIBLE_DEVICES" in environ:
        return visible_devices(environ["CUDA_VISIBLE_DEVICES"]), "CUDA_VISIBLE_DEVICES"
    return parse_smi_list(smi(environ.get("PATH", os.defpath))), "nvidia-smi -L"


def usable_cpus() -> tuple[int, ...]:
    """The cores this process may run on (its affinity, which a container's cpuset limits)."""
    try:
        return tuple(sorted(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return tuple(range(os.cpu_count() or 1))
