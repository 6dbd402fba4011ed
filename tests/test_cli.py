"""The CLI boundary: one error funnel, exit codes 0/1/2, --check, --version; never a traceback."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner

from embed_launcher.cli import launcher_command
from embed_launcher.reporting.console import Console
from embed_launcher.reporting.errors import ConfigError, LauncherError
from embed_launcher.reporting.funnel import run_guarded


def funnel(action: Callable[[], int], environ: dict[str, str] | None = None) -> tuple[int, str]:
    err = io.StringIO()
    code = run_guarded(action, Console(io.StringIO(), err, colour=False), environ or {})
    return code, err.getvalue()


def test_launcher_error_becomes_its_message_and_exit_code() -> None:
    """A known failure prints its one message and exits with its code."""

    def fail() -> int:
        raise LauncherError("Error: port 8000 is busy.", 2)

    assert funnel(fail) == (2, "Error: port 8000 is busy.\n")


def test_config_error_lists_every_problem() -> None:
    """All problems together, exit 2."""

    def fail() -> int:
        raise ConfigError(["EMBED_PORT='x' must be ...", "EMBED_HOST='y' must be ..."])

    code, err = funnel(fail)
    assert code == 2 and "2 problems" in err and "EMBED_PORT" in err and "EMBED_HOST" in err


def test_unexpected_exception_is_one_line_without_traceback() -> None:
    """A bug still reaches the user as one line with a hint; the traceback only with EMBED_DEBUG."""

    def boom() -> int:
        raise ZeroDivisionError("division by zero")

    code, err = funnel(boom)
    assert code == 1 and "Traceback" not in err and "EMBED_DEBUG=1" in err
    code, err = funnel(boom, {"EMBED_DEBUG": "1"})
    assert "Traceback" in err


def test_check_validates_and_exits_0_or_2(tmp_path: Path) -> None:
    """--check: configuration and TEI binary only; nothing is started."""
    tei = tmp_path / "tei"
    tei.write_text("#!/bin/sh\n")
    tei.chmod(0o755)
    env = {"EMBED_TEI_BIN": str(tei), "EMBED_ENV_FILE": str(tmp_path / "none.env"), "EMBED_DATA_DIR": str(tmp_path)}
    result = CliRunner().invoke(launcher_command, ["--check"], env=env)
    assert result.exit_code == 0 and "Configuration is valid." in result.output
    result = CliRunner().invoke(launcher_command, ["--check"], env={**env, "EMBED_PORT": "0"})
    assert result.exit_code == 2 and "EMBED_PORT" in result.output


def test_a_bad_keys_file_is_a_configuration_error(tmp_path: Path) -> None:
    """At start the keys file is configuration: exit 2, one message naming the file, the line and the problem."""
    tei = tmp_path / "tei"
    tei.write_text("#!/bin/sh\n")
    tei.chmod(0o755)
    keys = tmp_path / "keys.toml"
    env = {"EMBED_TEI_BIN": str(tei), "EMBED_ENV_FILE": str(tmp_path / "none.env"), "EMBED_DATA_DIR": str(tmp_path),
           "EMBED_API_KEYS_FILE": str(keys)}
    result = CliRunner().invoke(launcher_command, ["--check"], env=env)
    assert result.exit_code == 2 and f"EMBED_API_KEYS_FILE names {keys}, which does not exist" in result.output
    keys.write_text('\n[[keys]]\nid = "app"\nsha256 = "not-a-hash"\n')
    result = CliRunner().invoke(launcher_command, ["--check"], env=env)
    assert result.exit_code == 2 and f"keys file {keys} line 2: `sha256` must be" in result.output
    assert "Traceback" not in result.output
    (tmp_path / "keys.toml").write_text("[[keys]]\nid = 'x'\n")  # the default location is checked too
    del env["EMBED_API_KEYS_FILE"]
    result = CliRunner().invoke(launcher_command, ["--check"], env=env)
    assert result.exit_code == 2 and "line 1" in result.output
    keys.unlink()
    assert CliRunner().invoke(launcher_command, ["--check"], env=env).exit_code == 0  # absent: no keys yet


def test_version() -> None:
    """-V prints the version."""
    result = CliRunner().invoke(launcher_command, ["--version"])
    assert result.exit_code == 0 and "embed-launcher" in result.output


def test_log_format_json_and_a_bad_value(tmp_path: Path) -> None:
    """EMBED_LOG_FORMAT: json from the environment (errors too) or the env file; a bad value is one
    message naming the variable and the allowed values, exit 2."""
    tei = tmp_path / "tei"
    tei.write_text("#!/bin/sh\n")
    tei.chmod(0o755)
    inherited: dict[str, str | None] = {k: None for k in os.environ if k.startswith(("EMBED_", "RERANK_"))}
    env = {**inherited, "EMBED_TEI_BIN": str(tei), "EMBED_ENV_FILE": str(tmp_path / "none.env"),
           "EMBED_DATA_DIR": str(tmp_path)}  # nothing of the caller's: CI sets EMBED_REQUIRE_PODMAN, say
    bad = CliRunner().invoke(launcher_command, ["--check"], env={**env, "EMBED_LOG_FORMAT": "yaml"})
    assert bad.exit_code == 2 and "EMBED_LOG_FORMAT must be one of text, json; got 'yaml'." in bad.output
    failed = CliRunner().invoke(launcher_command, ["--check"], env={**env, "EMBED_LOG_FORMAT": "json",
                                                                   "EMBED_PORT": "0"})
    (line,) = [json.loads(text) for text in failed.output.splitlines()]
    assert failed.exit_code == 2 and line["level"] == "error" and "EMBED_PORT" in line["msg"]
    (tmp_path / "json.env").write_text("EMBED_LOG_FORMAT=json\n")
    valid = CliRunner().invoke(launcher_command, ["--check"], env={**env, "EMBED_ENV_FILE": str(tmp_path / "json.env")})
    (line,) = [json.loads(text) for text in valid.output.splitlines()]
    assert valid.exit_code == 0 and (line["level"], line["msg"]) == ("info", "Configuration is valid.")
