"""A Debian bookworm machine with systemd as PID 1, booted in podman, for testing the service for real.

    machine = boot(pm, image, src=checkout_copy, wheels=wheelhouse)   # /src and /wheels mounted
    machine.sh("scripts/install-systemd.sh --enable", cwd="/src")
    machine.show("MainPID", "ActiveState")                             # {"MainPID": "123", ...}

The image is imported once from the cached rootfs tar (scripts/systemd-rootfs.sh) and kept, like
the tar; the container is removed by the podman session that made it.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path

from conftest import wait_until
from containers.podman import Podman

ROOT = Path(__file__).resolve().parents[2]
ROOTFS_SCRIPT = ROOT / "scripts" / "systemd-rootfs.sh"
CACHE_DIR = Path("/var/cache/embed-launcher-ci")
IMAGE_REPO = "localhost/embed-launcher-ci/systemd-bookworm"
BOOT_TIMEOUT_S = 60.0
# What the checkout copy needs: the installer's source, the unit, and the TEI stand-in.
SOURCE_PATHS = ("pyproject.toml", "README.md", "embed.env.example", "embed_launcher", "scripts", "tests")


class MachineError(AssertionError):
    """A command inside the machine failed."""


@dataclass
class Machine:
    """One booted container; commands run as root through ``podman exec``."""

    pm: Podman
    name: str

    def sh(self, script: str, *, check: bool = True, cwd: str = "/", env: dict[str, str] | None = None,
           timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run a shell script inside; with ``check`` a non-zero exit raises MachineError."""
        env_args = [arg for k, v in (env or {}).items() for arg in ("-e", f"{k}={v}")]
        result = self.pm.run("exec", "-w", cwd, *env_args, self.name, "sh", "-c", script,
                             check=False, timeout_s=timeout_s)
        if check and result.returncode != 0:
            raise MachineError(f"`{script}` exited {result.returncode}\nstdout: {result.stdout[-3000:]}\n"
                               f"stderr: {result.stderr[-3000:]}")
        return result

    def show(self, *props: str, unit: str = "embed-launcher.service") -> dict[str, str]:
        """``systemctl show`` properties of ``unit``."""
        out = self.sh(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def main_pid(self) -> int:
        return int(self.show("MainPID")["MainPID"])

    def write(self, path: str, text: str, mode: str = "0644") -> None:
        """Create or replace a file inside (parents created)."""
        q = shlex.quote(path)
        self.sh(f"mkdir -p {shlex.quote(str(Path(path).parent))} && printf '%s' \"$CONTENT\" > {q} && chmod {mode} {q}",
                env={"CONTENT": text})

    def journal_cursor(self) -> str:
        out = self.sh("journalctl -n 0 --show-cursor --no-pager").stdout
        return out.strip().rsplit("cursor: ", 1)[-1]

    def journal(self, after: str, unit: str = "embed-launcher.service") -> str:
        """The unit's journal (messages from the service and from systemd about it) after a cursor."""
        return self.sh(f"journalctl -u {unit} -o cat --no-pager --after-cursor={shlex.quote(after)}").stdout

    def tei_pids(self) -> list[int]:
        """Every running TEI stand-in anywhere in the machine ([f]: not the shell running pgrep)."""
        out = self.sh("pgrep -f '/src/tests/[f]ake_tei/text-embeddings-router' || true").stdout
        return [int(pid) for pid in out.split()]

    def status_file(self) -> dict[str, object]:
        return json.loads(self.sh("cat /var/lib/embed-launcher/.status.json").stdout)

    def tei_pid(self) -> int | None:
        """The embeddings TEI's pid as the launcher recorded it, or None before it has one."""
        try:
            pid = self.status_file()["services"]["embed"]["pid"]  # type: ignore[index]
        except (MachineError, KeyError, TypeError, ValueError):
            return None
        return int(pid) if pid else None


def rootfs_tar() -> Path | str:
    """The cached rootfs tar (built on first use), or why it cannot be built."""
    result = subprocess.run([str(ROOTFS_SCRIPT), str(CACHE_DIR)], capture_output=True, text=True,
                            timeout=900, check=False)
    if result.returncode != 0:
        return f"cannot build the systemd rootfs: {result.stderr.strip()[-500:]}"
    return Path(result.stdout.strip().splitlines()[-1])


def image_for(pm: Podman, tar: Path) -> str:
    """The image imported from ``tar``, tagged with the tar's stamp; imported only once."""
    tag = f"{IMAGE_REPO}:{tar.stem.rsplit('-', 1)[-1]}"
    if pm.run("image", "exists", tag, check=False).returncode != 0:
        pm.run("import", "--change", 'CMD ["/sbin/init"]', str(tar), tag, timeout_s=600)
    return tag


def wheelhouse() -> Path:
    """Wheels of the project's dependencies and build backend, built on this host once per pyproject."""
    pyproject = (ROOT / "pyproject.toml").read_bytes()
    project = tomllib.loads(pyproject.decode())
    requirements = [*project["build-system"]["requires"], *project["project"]["dependencies"]]
    path = CACHE_DIR / f"wheels-{sha256(pyproject).hexdigest()[:12]}"
    if not (path / ".complete").exists():
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
                        "-w", str(path), *requirements], check=True, timeout=900)
        (path / ".complete").write_text("")
    return path


def copy_checkout(dest: Path) -> Path:
    """The files the installer and the stand-ins need, copied from this checkout (with local edits)."""
    import shutil

    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", ".pytest_cache")
    for name in SOURCE_PATHS:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        else:
            shutil.copy2(src, dest / name)
    dest.chmod(0o755)  # the service user reads the TEI stand-in from it (pytest's tmp dirs are 0700)
    return dest


def boot(pm: Podman, image: str, *, src: Path, wheels: Path) -> Machine:
    """Start systemd as PID 1 and wait until it has finished booting."""
    name = pm.name("systemd")
    # Ulimits, runtime and network come from scripts/podman-setup.sh's containers.conf.
    pm.run("run", "-d", "--name", name, "--privileged", "--systemd=always", "--cgroupns=private",
           "-v", f"{src}:/src", "-v", f"{wheels}:/wheels:ro", image, "/sbin/init")
    machine = Machine(pm, name)

    def booted() -> bool:
        state = machine.sh("systemctl is-system-running", check=False).stdout.strip()
        return state in ("running", "degraded")

    wait_until(booted, timeout_s=BOOT_TIMEOUT_S, interval_s=0.2)
    # podman's marker makes the launcher believe it is in a container (data not persistent).
    machine.sh("umount /run/.containerenv; rm -f /run/.containerenv")  # a bind mount
    return machine
