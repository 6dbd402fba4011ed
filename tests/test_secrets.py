"""Secrets stay secret: API keys and the HF token never reach an argv, a log line, embed_manage or a data file.

Only .api_key / .rerank_api_key may hold a key, mode 0600 and owned by the launcher's user
(design §4.1; reliability.md row 28). The keys are fresh per test, so a hit cannot be a coincidence.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from conftest import LauncherRun, manage
from fake_hub.repos import GRANTED_TOKEN
from faultkit import error_lines, service_tei, stop

pytestmark = pytest.mark.integration

Launch = Callable[..., LauncherRun]
KEY_FILES = {".api_key", ".rerank_api_key"}


@dataclass(frozen=True)
class Secrets:
    embed_key: str
    rerank_key: str
    hf_token: str = GRANTED_TOKEN  # the Hub stand-in answers 401 to any token it does not know

    @property
    def all(self) -> tuple[str, ...]:
        return (self.embed_key, self.rerank_key, self.hf_token)

    def env(self) -> dict[str, str]:
        return {"EMBED_API_KEY": self.embed_key, "RERANK_API_KEY": self.rerank_key, "EMBED_HF_TOKEN": self.hf_token}


def leaks(text: str | bytes, values: tuple[str, ...]) -> list[str]:
    """Which of ``values`` occur in ``text``."""
    data = text.encode() if isinstance(text, str) else text
    return [v for v in values if v.encode() in data]


@pytest.fixture
def keys() -> Secrets:
    return Secrets(f"embed-SECRET-{secrets.token_hex(12)}", f"rerank-SECRET-{secrets.token_hex(12)}")


@pytest.fixture
def served(launch: Launch, tei_dir: Path, keys: Secrets) -> Iterator[LauncherRun]:
    """Both services up with their own keys and an HF token; stopped cleanly afterwards."""
    run = launch({"RERANK_ENABLED": "true", **keys.env()}, tei=service_tei(tei_dir).path)
    run.wait_for("Text embeddings & reranking server is ready")
    yield run
    if run.proc.poll() is None:
        stop(run)


def test_no_secret_in_any_command_line(served: LauncherRun, keys: Secrets) -> None:
    """No /proc/*/cmdline on the machine holds a key; none in the launcher's tree holds the HF token."""
    tree = [psutil.Process(served.proc.pid), *served.children()]
    assert len(tree) >= 3
    for proc in tree:
        assert not leaks("\0".join(proc.cmdline()), keys.all), proc.pid
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            raw = cmdline.read_bytes()
        except OSError:
            continue  # exited meanwhile
        assert not leaks(raw, (keys.embed_key, keys.rerank_key)), cmdline


def test_no_secret_in_the_launcher_output_or_embed_manage(served: LauncherRun, keys: Secrets) -> None:
    """Relayed TEI lines are masked, launcher lines never hold a secret, --showinfo/--status neither."""
    out = served.output()
    assert out.count('api_key: Some("***")') == 2  # both TEIs printed their key, both were masked
    assert not leaks(out, keys.all)
    for args in (["--showinfo"], ["--status"], ["--status", "--json"]):
        result = manage(served, *args)
        assert result.returncode == 0, result.stdout + result.stderr
        assert not leaks(result.stdout + result.stderr, keys.all), args
    stop(served)
    assert not leaks(served.output(), keys.all)


def test_only_the_key_files_hold_keys_and_they_are_private(served: LauncherRun, keys: Secrets) -> None:
    """Every data-dir file but .api_key/.rerank_api_key is free of secrets; those two are 0600 and ours."""
    files = [p for p in served.data_dir.rglob("*") if p.is_file() and not p.is_symlink()]
    assert len(files) > 5
    for path in files:
        if path.name in KEY_FILES and path.parent == served.data_dir:
            continue
        assert not leaks(path.read_bytes(), keys.all), path
    expected = {".api_key": keys.embed_key, ".rerank_api_key": keys.rerank_key}
    for name, key in expected.items():
        path = served.data_dir / name
        info = path.stat()
        assert path.read_text().strip() == key
        assert stat.S_IMODE(info.st_mode) == 0o600, oct(info.st_mode)
        assert info.st_uid == os.geteuid()


def test_last_words_of_a_failing_tei_are_masked(launch: Launch, tei_dir: Path, keys: Secrets) -> None:
    """When TEI keeps failing, the launcher shows its last lines: still masked."""
    tei = service_tei(tei_dir, embed={"fail_start": 1})
    run = launch({"EMBED_START_RETRIES": "1", **keys.env()}, tei=tei.path)
    assert run.wait_exit(20) == 1
    last_words = run.output().split("Last output of the embeddings server:")[1]
    assert 'api_key: Some("***")' in last_words
    assert not leaks(run.output(), keys.all)


def test_a_rejected_hf_token_is_not_echoed(launch: Launch, tei_dir: Path) -> None:
    """The Hub refusing EMBED_HF_TOKEN -> one error line that names the variable, not the token."""
    token = f"hf_SECRET_{secrets.token_hex(12)}"
    run = launch({"EMBED_HF_TOKEN": token}, tei=service_tei(tei_dir).path)
    assert run.wait_exit(20) == 1
    lines = error_lines(run.output())
    assert len(lines) == 1 and "EMBED_HF_TOKEN" in lines[0]
    assert token not in run.output()


def test_a_malformed_env_file_line_holding_a_key_is_not_echoed(launch: Launch, tmp_path: Path) -> None:
    """A key line the parser rejects (a YAML-style colon) is reported by file and line, without its value."""
    key = f"embed-SECRET-{secrets.token_hex(12)}"
    run = launch(env_file_text=f"EMBED_PORT=8000\nEMBED_API_KEY: {key}\n")
    assert run.wait_exit(10) == 2
    out = run.output()
    assert f"{tmp_path / 'embed.env'} line 2" in out
    assert key not in out
