"""Shared test helpers: polling with a deadline, free ports, the TEI stand-in wrapper, launcher runs."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner, Result

from embed_launcher.manage.command import manage_command
from embed_launcher.startup.preflight import free_local_ports

TESTS = Path(__file__).resolve().parent
FAKE_TEI = TESTS / "fake_tei" / "text-embeddings-router"


def wait_until(predicate: Callable[[], object], timeout_s: float = 10.0, interval_s: float = 0.02) -> object:
    """Poll ``predicate`` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout_s} s: {predicate}")
        time.sleep(interval_s)


def wait_for_output(
    proc: subprocess.Popen[bytes], output: Callable[[], str], text: str, timeout_s: float, *, who: str
) -> None:
    """Poll ``output()`` until it contains ``text``; fail at once, with the output, if ``proc`` exits first."""

    def seen() -> bool:
        if text in output():
            return True
        if proc.poll() is not None:
            raise AssertionError(f"{who} exited {proc.returncode} before {text!r}:\n{output()}")
        return False

    wait_until(seen, timeout_s)


def free_port() -> int:
    """A port nobody listens on right now (gunicorn's helper; the race is accepted)."""
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports on 127.0.0.1, picked the way the launcher picks them behind the gateway."""
    return free_local_ports(n)


def write_model(root: Path, reranker: bool = False) -> Path:
    """A local model folder the TEI stand-in accepts (config.json + tokenizer.json)."""
    root.mkdir(parents=True, exist_ok=True)
    arch = "XLMRobertaForSequenceClassification" if reranker else "BertModel"
    (root / "config.json").write_text(json.dumps({"architectures": [arch], "model_type": "bert",
                                                  "max_position_embeddings": 512}))
    (root / "tokenizer.json").write_text("{}")
    (root / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 512}))
    return root


def make_tei(directory: Path, **knobs: object) -> Path:
    """A shell wrapper that runs the TEI stand-in with FAKE_TEI_* knobs baked in.

    The launcher gives TEI a scrubbed environment, so knobs cannot travel through it.
    """
    exports = "".join(f"export FAKE_TEI_{k.upper()}={shlex.quote(str(v))}\n" for k, v in knobs.items())
    path = directory / f"tei-{len(list(directory.glob('tei-*')))}"
    path.write_text(f'#!/bin/sh\n{exports}exec {shlex.quote(sys.executable)} {shlex.quote(str(FAKE_TEI))} "$@"\n')
    path.chmod(0o755)
    return path


@dataclass
class LauncherRun:
    """A launcher started as a real subprocess; its combined output goes to a file we poll."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str]
    data_dir: Path
    ports: dict[str, int] = field(default_factory=dict)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout_s: float = 20.0) -> None:
        """Wait until ``text`` appears in the output (failing early if the launcher died)."""
        wait_for_output(self.proc, self.output, text, timeout_s, who="launcher")

    def wait_exit(self, timeout_s: float = 20.0) -> int:
        return self.proc.wait(timeout=timeout_s)

    def children(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def child_argv(self, name: str) -> list[str]:
        """The command line of the TEI child serving ``name``."""
        return psutil.Process(self.child_pid(name)).cmdline()

    def child_pid(self, name: str) -> int:
        """The pid of the TEI child serving ``name`` (embed/rerank), from the status file."""
        import json

        status = json.loads((self.data_dir / ".status.json").read_text())
        return int(status["services"][name]["pid"])

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)


def alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    """Those still running (zombies count as gone)."""
    result = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                result.append(p)
        except psutil.NoSuchProcess:
            pass
    return result


@pytest.fixture(scope="session")
def hub() -> Iterator[object]:
    """The local Hub stand-in every launcher run downloads from (never the internet)."""
    from fake_hub.server import HubStandIn

    with HubStandIn().start() as stand_in:
        yield stand_in


@pytest.fixture
def tei_dir(tmp_path: Path) -> Path:
    path = tmp_path / "bin"
    path.mkdir()
    return path


@pytest.fixture
def launch(tmp_path: Path, tei_dir: Path, hub: object) -> Iterator[Callable[..., LauncherRun]]:
    """Start ``embed-launcher`` against the TEI stand-in on free ports; clean up every process after."""
    runs: list[LauncherRun] = []

    def start(
        env: dict[str, str] | None = None,
        *,
        tei: Path | None = None,
        data_dir: Path | None = None,
        env_file_text: str | None = None,
    ) -> LauncherRun:
        data = data_dir or tmp_path / "data"
        env_file = tmp_path / "embed.env"
        if env_file_text is not None:
            env_file.write_text(env_file_text)
        names = ("EMBED_PORT", "RERANK_PORT", "EMBED_PROMETHEUS_PORT", "RERANK_PROMETHEUS_PORT")
        ports = dict(zip(names, free_ports(len(names)), strict=True))
        full = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "EMBED_DATA_DIR": str(data),
            "EMBED_ENV_FILE": str(env_file),
            "EMBED_TEI_BIN": str(tei or make_tei(tei_dir, load_s=0.1)),
            "EMBED_HOST": "127.0.0.1",
            "EMBED_SERVER_ADDR": "127.0.0.1",  # never look up a public address from a test
            "HF_ENDPOINT": hub.endpoint,  # type: ignore[attr-defined]
            "EMBED_DATA_PERSISTENT": "true",  # this sandbox has /.dockerenv; act like bare metal
            "EMBED_STOP_TIMEOUT": "3",
            "EMBED_RESTART_DELAY": "0.2",
            "EMBED_READY_TIMEOUT": "20",
            "EMBED_HEALTH_INTERVAL": "0.5",
            **{k: str(v) for k, v in ports.items()},
            **(env or {}),
        }
        log_path = tmp_path / f"launcher-{len(runs)}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "embed_launcher"], env=full, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        run = LauncherRun(proc, log_path, full, data, {k: int(full[k]) for k in ports})
        runs.append(run)
        return run

    yield start
    clean_up(runs)


def clean_up(runs: list[LauncherRun]) -> None:
    """Stop any launcher still running (SIGTERM, as Docker does; SIGKILL if it does not exit within its
    stop timeout and a margin), then fail the test if any of its processes survive it."""
    survivors: list[psutil.Process] = []
    for run in runs:
        procs = run.children()
        if run.proc.poll() is None:
            run.proc.send_signal(signal.SIGTERM)
            try:
                run.proc.wait(timeout=float(run.env.get("EMBED_STOP_TIMEOUT", "8")) + 2)
            except subprocess.TimeoutExpired:
                run.proc.send_signal(signal.SIGKILL)
                run.proc.wait(timeout=10)
        _, still = psutil.wait_procs(alive(procs), timeout=5)
        survivors += alive(still)
    for p in survivors:
        p.kill()  # by pid, so one failure does not poison the rest of the suite
    assert not survivors, f"processes left behind: {[p.pid for p in survivors]}"


def manage(
    target: LauncherRun | Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``embed_manage`` against a launcher's (or any) data directory, as `docker exec` would."""
    data_dir = target.data_dir if isinstance(target, LauncherRun) else target
    full = {
        "PATH": os.environ.get("PATH", ""),
        "EMBED_DATA_DIR": str(data_dir),
        "EMBED_ENV_FILE": str(data_dir / "no-such.env"),  # never the real /embed.env
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-c", "from embed_launcher.manage.command import main; main()", *args],
        env=full, capture_output=True, text=True, timeout=30,
    )  # fmt: skip


@pytest.fixture(name="data")
def data_fixture(tmp_path: Path) -> Path:
    """An empty data directory (tmp_path/data) for the in-process `manage` fixture."""
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture(name="manage")
def manage_in_process(tmp_path: Path, data: Path) -> Callable[..., Result]:
    """Run embed_manage in-process (click's CliRunner) with the `data` directory and tmp_path/embed.env;
    no EMBED_*/RERANK_*/HF_*/CUDA_* of the caller leaks in. ``env_file`` writes that env file first.

    The fixture is named `manage` for the unit tests of embed_manage; the function `manage` above runs
    it as a subprocess against a running launcher's data directory.
    """

    def run(*args: str, env: dict[str, str] | None = None, env_file: str | None = None) -> Result:
        if env_file is not None:
            (tmp_path / "embed.env").write_text(env_file)
        inherited: dict[str, str | None] = {
            k: None for k in os.environ if k.startswith(("EMBED_", "RERANK_", "HF_", "CUDA_"))
        }
        full = inherited | {"EMBED_DATA_DIR": str(data), "EMBED_ENV_FILE": str(tmp_path / "embed.env"),
                            "EMBED_BACKEND": "onnx", "HF_HUB_DISABLE_TELEMETRY": "1"} | (env or {})
        result = CliRunner().invoke(manage_command, list(args), env=full)
        assert "Traceback" not in result.output, result.output
        return result

    return run
