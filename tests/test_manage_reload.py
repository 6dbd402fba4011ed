"""embed_manage --reload (SIGHUP, then the outcome from the live status) and --status during a reload."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from embed_launcher.manage.command import manage_command
from embed_launcher.manage.reload import reload
from embed_launcher.reporting.console import Console
from embed_launcher.reporting.errors import LauncherError


def publish(data: Path, reload_record: dict[str, object] | None, **services: dict[str, object]) -> None:
    status = {"launcher_pid": os.getpid(), "updated": time.time(), "heartbeat_s": 5.0, "generation": 3,
              "reload": reload_record, "services": {k.replace("_at_", "@"): v for k, v in services.items()}}
    (data / ".status.json").write_text(json.dumps(status))


def run_reload(data: Path, after_signal: dict[str, object] | None, timeout_s: float = 5) -> tuple[int, str, str]:
    """--reload against a fake launcher: the 'signal' writes the outcome the launcher would publish."""
    out, err = io.StringIO(), io.StringIO()
    sent: list[tuple[int, int]] = []

    def kill(pid: int, sig: int) -> None:
        sent.append((pid, sig))
        publish(data, after_signal)

    code = reload({"EMBED_DATA_DIR": str(data)}, Console(out, err, colour=False), timeout_s=timeout_s, kill=kill)
    assert sent == [(os.getpid(), 1)]  # SIGHUP to the launcher's pid
    return code, out.getvalue(), err.getvalue()


def test_reload_waits_for_its_outcome_and_says_it(tmp_path: Path) -> None:
    publish(tmp_path, {"seq": 4, "state": "ok", "message": "earlier", "generation": 2})
    code, out, _ = run_reload(tmp_path, {"seq": 5, "state": "ok", "message": "configuration 3 serves (added b)"})
    assert (code, out) == (0, "Reload complete: configuration 3 serves (added b).\n")


def test_a_failed_reload_exits_1_with_the_reason(tmp_path: Path) -> None:
    publish(tmp_path, None)
    code, _, err = run_reload(tmp_path, {"seq": 1, "state": "failed", "message": "EMBED_PORT changed: restart"
                                         " required (a reload cannot change it)"})
    assert code == 1
    assert err == ("Reload failed: EMBED_PORT changed: restart required (a reload cannot change it); still serving"
                   " the previous configuration\n")


def test_no_outcome_within_the_timeout_is_an_error_naming_the_option(tmp_path: Path) -> None:
    publish(tmp_path, None)
    with pytest.raises(LauncherError, match=r"no outcome of the reload within 0.5 s \(--timeout\)"):
        run_reload(tmp_path, {"seq": 1, "state": "running", "message": "reloading"}, timeout_s=0.5)


def test_reload_without_a_launcher_is_one_error_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(manage_command, ["--reload"], env={"EMBED_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 1
    assert result.stderr == ("Error: the launcher is not running (no live process for this data directory);"
                             " nothing to reload.\n")
    wrong = CliRunner().invoke(manage_command, ["--status", "--timeout", "3"], env={"EMBED_DATA_DIR": str(tmp_path)})
    assert wrong.exit_code == 2 and "--timeout goes with --reload." in wrong.stderr


def test_status_during_a_switch_shows_both_generations_and_stays_healthy(tmp_path: Path) -> None:
    (tmp_path / ".port").write_text("8000")
    (tmp_path / ".model").write_text("BAAI/bge-small-en-v1.5")
    (tmp_path / ".embed_active").write_text("1")
    (tmp_path / ".rerank_active").write_text("0")
    old = {"kind": "embed", "model": "BAAI/bge-small-en-v1.5", "port": 30000, "pid": 11, "state": "stopping",
           "service": "embed", "generation": 1, "draining": True, "since": time.time()}
    new = {**old, "port": 30002, "pid": 12, "state": "running", "health": "ready", "generation": 3, "draining": False}
    publish(tmp_path, {"seq": 1, "state": "running", "message": "reloading", "generation": 1},
            embed=old, embed_at_3=new)
    result = CliRunner().invoke(manage_command, ["--status", "--json"], env={"EMBED_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [(s["name"], s["state"], s["generation"], s["draining"]) for s in report["services"]] == [
        ("embed", "draining", 1, True), ("embed@3", "running", 3, False)]
    assert report["reload"]["state"] == "running" and report["generation"] == 3
