"""Tests for docker/tei-select.sh: which TEI binary runs, with which library path, as which PID."""

from __future__ import annotations

import os
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "docker" / "tei-select.sh"

FAKE_ROUTER = """#!/bin/sh
echo "binary=${0##*/}"
echo "pid=$$"
echo "args=$*"
echo "ld=${LD_LIBRARY_PATH:-}"
echo "path=$PATH"
"""

FAKE_NVIDIA_SMI = """#!/bin/sh
case "$*" in
  *compute_cap*) echo "$FAKE_CAP" ;;
  *) echo "| NVIDIA-SMI 550.54.15   Driver Version: 550.54.15   CUDA Version: $FAKE_DRIVER_CUDA |" ;;
esac
"""


def write_executable(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@dataclass
class Image:
    """A fake image tree: bin dir, optional CUDA dir, optional fake nvidia-smi."""

    root: Path

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    def add_routers(self, *suffixes: str) -> None:
        for suffix in suffixes:
            write_executable(self.bin_dir / f"text-embeddings-router{suffix}", FAKE_ROUTER)

    def make_cuda(self, *, compat: bool = True) -> None:
        (self.root / "cuda" / ("compat" if compat else "lib64")).mkdir(parents=True)

    def add_nvidia_smi(self) -> None:
        write_executable(self.root / "smi" / "nvidia-smi", FAKE_NVIDIA_SMI)

    def run(self, *args: str, cap: str = "8.6", driver_cuda: str = "12.4", cuda_version: str = "12.9.1") -> Result:
        env = {
            "PATH": f"{self.root / 'smi'}:/usr/bin:/bin",
            "TEI_SELECT_BIN_DIR": str(self.bin_dir),
            "TEI_SELECT_CUDA_DIR": str(self.root / "cuda"),
            "TEI_SELECT_NVIDIA_DIR": str(self.root / "nvidia"),
            "FAKE_CAP": cap,
            "FAKE_DRIVER_CUDA": driver_cuda,
            "CUDA_VERSION": cuda_version,
            "LD_LIBRARY_PATH": "/usr/local/cuda/lib64",
        }
        proc = subprocess.Popen(
            ["/bin/sh", str(SCRIPT), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        out, err = proc.communicate(timeout=10)
        fields = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        return Result(proc.returncode, proc.pid, fields, err)


@dataclass
class Result:
    code: int
    pid: int
    fields: dict[str, str]
    stderr: str


@pytest.fixture
def image(tmp_path: Path) -> Image:
    return Image(tmp_path)


def test_script_is_executable_in_the_repo() -> None:
    """The Dockerfile COPYs it with --chmod, but a checkout should keep the bit too."""
    assert os.access(SCRIPT, os.X_OK)


def test_cpu_image_execs_the_router_with_all_arguments(image: Image) -> None:
    """CPU image: the router runs as the same PID (exec) and gets the arguments unchanged."""
    image.add_routers("")
    result = image.run("--model-id", "/m", "--port", "8000", "--cors-allow-origin", "a b")
    assert result.code == 0, result.stderr
    assert result.fields["binary"] == "text-embeddings-router"
    assert result.fields["args"] == "--model-id /m --port 8000 --cors-allow-origin a b"
    assert int(result.fields["pid"]) == result.pid
    assert result.fields["ld"] == "/usr/local/cuda/lib64"  # untouched on CPU


def test_cpu_image_without_router_fails_with_one_line(image: Image) -> None:
    """No router at all: exit 1 with a message naming the path and the fix."""
    image.bin_dir.mkdir()
    result = image.run()
    assert result.code == 1
    assert "text-embeddings-router not found" in result.stderr and "TEI_TAG" in result.stderr


@pytest.mark.parametrize(
    ("cap", "expected"),
    [
        ("7.5", "text-embeddings-router-75"),
        ("8.0", "text-embeddings-router-80"),
        ("8.6", "text-embeddings-router-80"),
        ("8.9", "text-embeddings-router-80"),
        ("9.0", "text-embeddings-router-90"),
        ("10.0", "text-embeddings-router-100"),
        ("10.3", "text-embeddings-router-100"),
        ("12.0", "text-embeddings-router-120"),
        ("12.1", "text-embeddings-router-120"),
    ],
)
def test_multi_arch_cuda_image_picks_by_compute_capability(image: Image, cap: str, expected: str) -> None:
    """cuda-* image: the build for the GPU's major version, newest not above its capability."""
    image.add_routers("-75", "-80", "-90", "-100", "-120")
    image.make_cuda()
    image.add_nvidia_smi()
    result = image.run("--port", "8000", cap=cap)
    assert result.code == 0, result.stderr
    assert result.fields["binary"] == expected
    assert int(result.fields["pid"]) == result.pid


@pytest.mark.parametrize("cap", ["7.0", "6.1", "11.0"])
def test_unsupported_gpu_is_named_with_the_builds_on_offer(image: Image, cap: str) -> None:
    """No matching build: exit 1, naming the capability and the builds the image has."""
    image.add_routers("-75", "-80", "-90", "-100", "-120")
    image.make_cuda()
    image.add_nvidia_smi()
    result = image.run(cap=cap)
    assert result.code == 1
    assert f"compute capability {cap.replace('.', '')}" in result.stderr
    offered = result.stderr.rsplit("it has: ", 1)[1].split(")")[0].split()
    assert sorted(offered, key=int) == ["75", "80", "90", "100", "120"]


def test_unreadable_compute_capability(image: Image) -> None:
    """Garbage from nvidia-smi is reported, not fed to arithmetic."""
    image.add_routers("-80")
    image.make_cuda()
    image.add_nvidia_smi()
    result = image.run(cap="[N/A]")
    assert result.code == 1
    assert "could not read the GPU's compute capability" in result.stderr


def test_cuda_image_without_gpu_says_how_to_fix_it(image: Image) -> None:
    """No nvidia-smi (no --gpus): exit 1 naming --gpus all and the CPU tag."""
    image.add_routers("")
    image.make_cuda()
    result = image.run()
    assert result.code == 1
    assert "nvidia-smi not found" in result.stderr and "--gpus all" in result.stderr


@pytest.mark.parametrize(
    ("driver_cuda", "cuda_version", "compat_first"),
    [("12.4", "12.9.1", True), ("12.9", "12.9.1", True), ("12.9.1", "12.9.1", False), ("13.0", "12.9.1", False)],
)
def test_cuda_compat_only_for_older_drivers(
    image: Image, driver_cuda: str, cuda_version: str, compat_first: bool
) -> None:
    """Per-arch CUDA image: cuda-compat leads LD_LIBRARY_PATH only when the driver is older."""
    image.add_routers("")
    image.make_cuda()
    image.add_nvidia_smi()
    result = image.run(driver_cuda=driver_cuda, cuda_version=cuda_version)
    assert result.code == 0, result.stderr
    assert result.fields["binary"] == "text-embeddings-router"
    compat = str(image.root / "cuda" / "compat")
    expected = f"{compat}:/usr/local/cuda/lib64" if compat_first else "/usr/local/cuda/lib64"
    assert result.fields["ld"] == expected


def test_host_nvidia_paths_are_appended(image: Image) -> None:
    """/usr/local/nvidia/{bin,lib64} join PATH and LD_LIBRARY_PATH after the image's own."""
    image.add_routers("")
    image.make_cuda(compat=False)
    image.add_nvidia_smi()
    (image.root / "nvidia" / "bin").mkdir(parents=True)
    (image.root / "nvidia" / "lib64").mkdir()
    result = image.run()
    assert result.code == 0, result.stderr
    assert result.fields["ld"] == f"/usr/local/cuda/lib64:{image.root / 'nvidia' / 'lib64'}"
    assert result.fields["path"].endswith(f":{image.root / 'nvidia' / 'bin'}")
