"""embed_manage --addkey / --listkeys / --revokekey: the keys file, edited atomically, hashes only;
and the same file used by a real gateway (a key added by embed_manage works, a revoked one is refused)."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from click.testing import Result
from conftest import wait_until
from gateway_harness import start_stack, stop_stack

from embed_launcher.gateway.keyfile import hash_key, parse_keys

Manage = Callable[..., Result]
KEY = re.compile(r"^(embed-[0-9a-f]{48})$", re.MULTILINE)


def added_key(result: Result) -> str:
    assert result.exit_code == 0, result.output
    found = KEY.findall(result.output)
    assert len(found) == 1, result.output
    return str(found[0])


def test_addkey_prints_the_key_once_and_stores_only_its_hash(manage: Manage, data: Path) -> None:
    """Without EMBED_API_KEYS_FILE the file is <data dir>/keys.toml (where the gateway looks by default)."""
    key = added_key(manage("--addkey", "search", "--scopes", "embed", "--models", "small,BAAI/bge-m3",
                           "--expires", "2027-01-01T00:00:00Z", "--rpm", "600"))
    path = data / "keys.toml"
    text = path.read_text()
    assert key not in text and hash_key(key) in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    (entry,) = parse_keys(text, str(path))
    assert (entry.id, entry.scopes, entry.models, entry.rpm) == ("search", ("embed",), ("small", "BAAI/bge-m3"), 600)
    assert [p.name for p in data.iterdir()] == ["keys.toml"]  # no temp file left behind


def test_listkeys_shows_ids_scopes_models_expiry_and_last_use(manage: Manage) -> None:
    added_key(manage("--addkey", "search", "--scopes", "embed", "--models", "small", "--expires", "2020-01-01T00:00Z"))
    added_key(manage("--addkey", "ranker", "--scopes", "rerank", "--rpm", "5"))
    listed = manage("--listkeys")
    assert listed.exit_code == 0, listed.output
    search = next(line for line in listed.output.splitlines() if line.strip().startswith("search"))
    ranker = next(line for line in listed.output.splitlines() if line.strip().startswith("ranker"))
    assert "embed" in search and "small" in search and "2020-01-01T00:00:00Z (expired)" in search
    assert "rerank (5 rpm)" in ranker and "all" in ranker and "never" in ranker and ranker.rstrip().endswith(" -")
    assert "embed-" not in listed.output  # never a key


def test_listkeys_shows_the_latest_use_any_worker_recorded(manage: Manage, data: Path) -> None:
    added_key(manage("--addkey", "search"))
    added_key(manage("--addkey", "idle"))
    when = datetime(2026, 12, 5, 12, 0, tzinfo=UTC).timestamp()
    (data / ".key_use.0.json").write_text(json.dumps({"search": when - 60, "gone": when}))
    (data / ".key_use.1.json").write_text(json.dumps({"search": when}))
    (data / ".key_use.2.json").write_text("{half")  # a torn or foreign file is skipped
    listed = manage("--listkeys")
    search = next(line for line in listed.output.splitlines() if line.strip().startswith("search"))
    idle = next(line for line in listed.output.splitlines() if line.strip().startswith("idle"))
    assert search.rstrip().endswith("2026-12-05T12:00:00Z") and idle.rstrip().endswith(" -")


def test_revokekey_removes_only_that_key_and_keeps_comments(manage: Manage, data: Path) -> None:
    path = data / "keys.toml"
    path.write_text("# managed by ops, see the wiki\n")
    added_key(manage("--addkey", "one"))
    added_key(manage("--addkey", "two"))
    assert manage("--revokekey", "one").exit_code == 0
    text = path.read_text()
    assert text.startswith("# managed by ops") and [k.id for k in parse_keys(text, "k")] == ["two"]
    missing = manage("--revokekey", "one")
    assert missing.exit_code == 1 and "no key 'one'" in missing.output and "two" in missing.output


def test_the_keys_file_variable_is_followed(manage: Manage, tmp_path: Path) -> None:
    path = tmp_path / "etc" / "keys.toml"
    added_key(manage("--addkey", "one", env={"EMBED_API_KEYS_FILE": str(path)}))
    assert [k.id for k in parse_keys(path.read_text(), "k")] == ["one"]


@pytest.mark.parametrize(("args", "message"), [
    (("--addkey", "default"), "cannot be a key id"),
    (("--addkey", "a b"), "cannot be a key id"),
    (("--addkey", "x", "--scopes", "admin"), "--scopes takes"),
    (("--addkey", "x", "--expires", "tomorrow"), "--expires"),
    (("--addkey", "x", "--expires", "2027-01-01T00:00:00"), "offset"),
    (("--addkey", "x", "--rpm", "0"), "--rpm"),
    (("--listkeys", "--scopes", "embed"), "--scopes goes with --addkey"),
    (("--addkey",), "Missing key id"),
    (("--revokekey", "--listkeys"), "Missing key id"),
    (("--addkey", "x", "--listkeys"), "only one action"),
])
def test_bad_options_get_one_line_and_exit_2(manage: Manage, args: tuple[str, ...], message: str) -> None:
    result = manage(*args)
    assert result.exit_code == 2 and message in result.output, result.output


def test_a_duplicate_id_or_a_broken_file_is_not_edited(manage: Manage, data: Path) -> None:
    added_key(manage("--addkey", "one"))
    again = manage("--addkey", "one")
    assert again.exit_code == 1 and "has a key 'one' already" in again.output
    path = data / "keys.toml"
    path.write_text(path.read_text() + "rpm = 'x'\n")
    before = path.read_text()
    broken = manage("--addkey", "two")
    assert broken.exit_code == 1 and f"keys file {path} line 1" in broken.output
    assert "Fix the file first" in broken.output
    assert path.read_text() == before


def test_concurrent_addkeys_lose_none(data: Path, tmp_path: Path) -> None:
    """Several embed_manage processes at once: each read-modify-write holds the lock, none is lost."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "EMBED_DATA_DIR": str(data),
           "EMBED_ENV_FILE": str(tmp_path / "embed.env")}
    procs = [subprocess.Popen([sys.executable, "-m", "embed_launcher.manage", "--addkey", f"k{i}"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in range(6)]
    outputs = [proc.communicate(timeout=60)[0].decode() for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), outputs
    assert sorted(k.id for k in parse_keys((data / "keys.toml").read_text(), "k")) == [f"k{i}" for i in range(6)]


def test_a_key_added_with_embed_manage_works_at_once_and_a_revoked_one_is_refused(
        manage: Manage, data: Path, tmp_path: Path) -> None:
    """The default location end to end: the gateway watches <data dir>/keys.toml before it exists."""
    stack = start_stack(tmp_path, env={"EMBED_API_KEYS_FILE": str(data / "keys.toml")})
    try:
        url = stack.gateway.url("/v1/embeddings")

        def status(key: str) -> int:
            return httpx.post(url, json={"input": "x"}, headers={"Authorization": f"Bearer {key}"}).status_code

        key = added_key(manage("--addkey", "app", "--models", "small"))
        wait_until(lambda: status(key) == 200, 15)
        assert manage("--revokekey", "app").exit_code == 0
        wait_until(lambda: status(key) == 401, 15)
    finally:
        stop_stack(stack)


def test_the_gateway_records_last_use_for_listkeys(manage: Manage, data: Path, tmp_path: Path) -> None:
    """Each worker writes its own record (at stop at the latest); --listkeys shows the latest use."""
    key = added_key(manage("--addkey", "app"))
    stack = start_stack(tmp_path, workers=2, env={"EMBED_API_KEYS_FILE": str(data / "keys.toml"),
                                                  "EMBED_GATEWAY_STATE_DIR": str(data)})
    try:
        url = stack.gateway.url("/v1/embeddings")
        for _ in range(10):  # over several connections: the kernel spreads them over the workers
            assert httpx.post(url, json={"input": "x"}, headers={"api-key": key}).status_code == 200
    finally:
        stop_stack(stack)
    assert {p.name for p in data.glob(".key_use.*")} <= {".key_use.0.json", ".key_use.1.json"}
    listed = manage("--listkeys")
    app = next(line for line in listed.output.splitlines() if line.strip().startswith("app"))
    assert re.search(r"20\d\d-\d\d-\d\dT\d\d:\d\d:\d\dZ$", app.rstrip()), listed.output
