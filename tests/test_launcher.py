"""The start sequence (startup/launcher.py) with its effects replaced: the download phase, port picking, the loop."""

from __future__ import annotations

import io
import signal
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import free_ports, make_tei

from embed_launcher.reporting.console import Console
from embed_launcher.startup.launcher import Launcher
from embed_launcher.startup.preflight import free_local_ports
from embed_launcher.supervision.plan import ChildSpec


class Recorder(Launcher):
    """The real start sequence up to the supervisor, which it replaces by recording the plan."""

    specs: tuple[ChildSpec, ...] = ()

    def supervise(self, settings: Any, specs: tuple[ChildSpec, ...], *args: Any) -> int:
        self.specs = specs
        return 0


@pytest.fixture
def restore_signals() -> Iterator[None]:
    """Launcher.run installs the loop's signal handlers and wakeup fd in this process: put pytest's back."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT,
                                                    signal.SIGCHLD)}  # fmt: skip
    yield
    signal.set_wakeup_fd(-1)
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_internal_ports_are_picked_after_the_downloads(tmp_path: Path, restore_signals: None) -> None:
    """Behind the gateway, the TEIs' ports on 127.0.0.1 are chosen once the models are in place, just before
    the TEIs start: chosen before a download of many minutes, anyone could have taken them meanwhile."""
    events: list[str] = []
    picked: list[int] = []

    def fetch(settings: Any, backends: Mapping[str, str], *args: Any, **kwargs: Any) -> dict[str, str]:
        events.append("download")
        return {}

    def pick(count: int) -> list[int]:
        events.append("ports")
        picked.extend(free_local_ports(count))
        return picked

    port, rerank_port = free_ports(2)
    env = {
        "PATH": "/usr/bin:/bin",
        "EMBED_DATA_DIR": str(tmp_path / "data"),
        "EMBED_ENV_FILE": str(tmp_path / "none.env"),
        "EMBED_TEI_BIN": str(make_tei(tmp_path)),
        "EMBED_SERVER_ADDR": "127.0.0.1",
        "EMBED_HOST": "127.0.0.1",
        "EMBED_DATA_PERSISTENT": "true",
        "EMBED_MODEL": "BAAI/bge-small-en-v1.5,BAAI/bge-m3",  # two models on one port: the gateway is on
        "EMBED_PORT": str(port),
        "RERANK_PORT": str(rerank_port),
    }
    launcher = Recorder(env, Console(io.StringIO(), io.StringIO(), colour=False), fetch=fetch, pick_ports=pick)
    assert launcher.run() == 0
    assert events == ["download", "ports"]
    tei_ports: Sequence[int] = [s.port for s in launcher.specs if s.kind != "gateway"]
    assert sorted(tei_ports) == sorted(picked[0::2]) and [s.name for s in launcher.specs][-1] == "gateway"
