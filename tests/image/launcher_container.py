"""The launcher image run as a container on the host network, with the calls the image tests make."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field

from conftest import free_ports, wait_until
from containers.podman import Podman

DATA_DIR = "/var/lib/embeddings"
HEALTHY_TIMEOUT_S = 90.0
PORT_NAMES = ("EMBED_PORT", "RERANK_PORT", "EMBED_PROMETHEUS_PORT", "RERANK_PROMETHEUS_PORT")
# podman 4.3 schedules health checks with systemd timers, absent here: the tests run them.
HEALTH_POLL_S = 0.5


@dataclass(frozen=True)
class BuiltImage:
    """The launcher image as docker/Dockerfile builds it, and what the build printed."""

    tag: str
    build_log: str


@dataclass
class Container:
    """One running (or exited) launcher container."""

    pm: Podman
    name: str
    ports: dict[str, int]
    volume: str | None
    args: list[str] = field(default_factory=list)

    def exec(self, *args: str, check: bool = False) -> str:
        """``podman exec`` as the container's user; returns stdout."""
        return self.pm.run("exec", self.name, *args, check=check).stdout

    def healthy(self) -> bool:
        """Run the image's HEALTHCHECK once, as the engine would; True when it passes."""
        return self.pm.run("healthcheck", "run", self.name, check=False).returncode == 0

    def wait_healthy(self, timeout_s: float = HEALTHY_TIMEOUT_S) -> None:
        try:
            wait_until(self.healthy, timeout_s=timeout_s, interval_s=HEALTH_POLL_S)
        except AssertionError as exc:
            raise AssertionError(f"{self.name} not healthy in {timeout_s} s; logs:\n{self.logs()[-4000:]}") from exc

    def getkey(self) -> str:
        result = self.pm.run("exec", self.name, "embed_manage", "--getkey")
        return result.stdout.strip()

    def state(self, template: str) -> str:
        return self.pm.inspect("container", self.name, template)

    def running(self) -> bool:
        return self.state("{{.State.Running}}") == "true"

    def logs(self) -> str:
        result = self.pm.run("logs", self.name, check=False)
        return result.stdout + result.stderr

    def stop(self) -> float:
        """``podman stop`` (SIGTERM, 10 s grace); returns how long it took."""
        started = time.monotonic()
        self.pm.run("stop", "--time", "10", self.name)
        return time.monotonic() - started

    def post(self, path: str, body: object, key: str | None = None, port_name: str = "EMBED_PORT") -> int:
        """POST JSON; the HTTP status, or 0 when nothing answers."""
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.ports[port_name]}{path}", data=json.dumps(body).encode(),
            headers=headers, method="POST",
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as err:
            return int(err.code)
        except OSError:  # refused or reset: TEI is (re)starting
            return 0

    def embed(self, key: str | None) -> int:
        return self.post("/v1/embeddings", {"input": ["first text", "second text"]}, key)


@dataclass
class Starter:
    """Starts containers of one image on free ports, downloading from the Hub stand-in."""

    pm: Podman
    image: str
    hub_endpoint: str

    def __call__(
        self,
        volume: str | None,
        env: dict[str, str] | None = None,
        options: Sequence[str] = (),
        ports: dict[str, int] | None = None,
    ) -> Container:
        """``podman run -d`` with the volume (if any) at the data dir; fails if it does not start."""
        ports = ports or dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES)), strict=True))
        full_env = {
            "HF_ENDPOINT": self.hub_endpoint,
            "EMBED_HOST": "127.0.0.1",
            "EMBED_SERVER_ADDR": "127.0.0.1",  # never look up a public address from a test
            **{k: str(v) for k, v in ports.items()},
            **(env or {}),
        }
        name = self.pm.name("launcher")
        args = ["run", "-d", "--name", name, "--network", "host", *options]
        if volume is not None:
            args += ["-v", f"{volume}:{DATA_DIR}"]
        for key, value in full_env.items():
            args += ["-e", f"{key}={value}"]
        self.pm.run(*args, self.image)
        return Container(self.pm, name, ports, volume, args)
