"""Tests for the data directory: key rules, atomic writes, persistence, state and status files."""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest

from embed_launcher.datadir.atomic import atomic_write
from embed_launcher.datadir.directory import STATE_FILES, DataDir, StateSnapshot
from embed_launcher.datadir.keys import (
    EXISTING_NO_KEY_NOTICES,
    NOT_PERSISTENT_NOTICES,
    ApiKeys,
    KeyResolution,
    generate_key,
)
from embed_launcher.datadir.persistence import in_container, is_persistent
from embed_launcher.reporting.errors import LauncherError

NEW_KEY = "embed-" + "ab" * 24


def fixed_key() -> str:
    return NEW_KEY


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


# -- API key rules (original §1.2) ---------------------------------------------------------

KEY_TABLE = [
    # id, EMBED_API_KEY, existing .api_key, persistent, existing, key, source, notices
    ("given", "my-key", "old-key", True, True, "my-key", "given", ()),
    ("given-not-persistent", "my-key", None, False, False, "my-key", "given", ()),
    ("unset-file", None, "file-key\n", True, True, "file-key", "file", ()),
    ("unset-file-not-persistent", None, "file-key", False, False, "file-key", "file", ()),
    ("unset-fresh", None, None, True, False, NEW_KEY, "generated", ()),
    ("unset-blank-file-fresh", None, "  \n", True, False, NEW_KEY, "generated", ()),
    ("unset-existing", None, None, True, True, None, "none", EXISTING_NO_KEY_NOTICES),
    ("unset-not-persistent", None, None, False, False, None, "none", NOT_PERSISTENT_NOTICES),
    ("empty-no-file", "", None, True, False, None, "none", ()),
]


@pytest.mark.parametrize(
    "given, old, persistent, existing, key, source, notices",
    [row[1:] for row in KEY_TABLE], ids=[row[0] for row in KEY_TABLE])
def test_key_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str], given: str | None,
                   old: str | None, persistent: bool, existing: bool, key: str | None,
                   source: str, notices: tuple[str, ...]) -> None:
    """Each key situation of the original gives its key, source and notices, and prints nothing."""
    if old is not None:
        (tmp_path / ".api_key").write_text(old)
        os.chmod(tmp_path / ".api_key", 0o600)
    got = ApiKeys(DataDir(tmp_path)).resolve(given, None, persistent=persistent, existing=existing,
                                         token_factory=fixed_key)
    assert (got.embed_key, got.rerank_key, got.source, got.notices) == (key, key, source, notices)
    assert capsys.readouterr() == ("", "")
    if source in ("given", "generated"):
        assert (tmp_path / ".api_key").read_text() == key
    if source == "none":
        assert not (tmp_path / ".api_key").exists()
    marker = tmp_path / ".auto_api_key_created"
    assert marker.exists() == (source == "generated")
    if source == "generated":
        assert marker.read_text() == "true"
        assert mode_of(marker) == 0o600


@pytest.mark.parametrize("source", ["given", "generated"])
def test_key_file_is_0600_from_creation(tmp_path: Path, source: str) -> None:
    """A written key file is 0600 at once, whatever the umask."""
    given = "my-key" if source == "given" else None
    old_umask = os.umask(0)
    try:
        ApiKeys(DataDir(tmp_path)).resolve(given, None, persistent=True, existing=False)
    finally:
        os.umask(old_umask)
    assert mode_of(tmp_path / ".api_key") == 0o600
    assert (tmp_path / ".api_key").read_text().startswith("my-key" if given else "embed-")


def test_generated_key_format() -> None:
    """Generated keys are embed- plus 48 lowercase hex digits, and differ each time."""
    assert re.fullmatch(r"embed-[0-9a-f]{48}", generate_key())
    assert generate_key() != generate_key()


def test_explicit_empty_moves_old_key_aside(tmp_path: Path) -> None:
    """EMBED_API_KEY= turns auth off and keeps the old key in .api_key.disabled (fix §1.11.11)."""
    (tmp_path / ".api_key").write_text("old-key")
    os.chmod(tmp_path / ".api_key", 0o600)
    data = DataDir(tmp_path)
    got = ApiKeys(data).resolve("", None, persistent=True, existing=True)
    disabled = tmp_path / ".api_key.disabled"
    assert (got.embed_key, got.rerank_key, got.source) == (None, None, "none")
    assert got.notices == ("Note: EMBED_API_KEY is explicitly empty, so authentication is off. "
                           f"The previous key was kept in {disabled}.",)
    assert not (tmp_path / ".api_key").exists()
    assert disabled.read_text() == "old-key" and mode_of(disabled) == 0o600
    # The stale key must not come back once the empty line is removed.
    later = ApiKeys(data).resolve(None, None, persistent=True, existing=True)
    assert later.embed_key is None and later.notices == EXISTING_NO_KEY_NOTICES


def test_loose_key_file_is_tightened(tmp_path: Path) -> None:
    """A group/other-readable .api_key is tightened to 0600 with a notice that hides the key."""
    key_file = tmp_path / ".api_key"
    key_file.write_text("secret-value")
    os.chmod(key_file, 0o644)
    got = ApiKeys(DataDir(tmp_path)).resolve(None, None, persistent=True, existing=True)
    assert got.embed_key == "secret-value"
    assert mode_of(key_file) == 0o600
    assert got.notices == (f"Warning: {key_file} was accessible by other users (mode 0644); "
                           "tightened to 0600.",)


def test_foreign_owned_key_file_warns(tmp_path: Path) -> None:
    """A key file owned by another uid is still used, with a warning naming path and owner."""
    key_file = tmp_path / ".api_key"
    key_file.write_text("secret-value")
    os.chmod(key_file, 0o600)
    owner = key_file.stat().st_uid
    got = ApiKeys(DataDir(tmp_path, geteuid=lambda: owner + 4242)).resolve(
        None, None, persistent=True, existing=True)
    assert got.embed_key == "secret-value"
    assert len(got.notices) == 1
    assert str(key_file) in got.notices[0] and f"uid {owner}" in got.notices[0]
    assert "secret-value" not in got.notices[0]


# -- reranker key ---------------------------------------------------------------------------

RERANK_TABLE = [
    # id, EMBED_API_KEY, RERANK_API_KEY, embed key, rerank key, .rerank_api_key content
    ("unset-follows-given", "e-key", None, "e-key", "e-key", None),
    ("unset-follows-generated", None, None, NEW_KEY, NEW_KEY, None),
    ("unset-follows-none", "", None, None, None, None),
    ("empty-disables", "e-key", "", "e-key", None, None),
    ("own-key-persisted", "e-key", "r-key", "e-key", "r-key", "r-key"),
    ("own-key-without-embed-auth", "", "r-key", None, "r-key", "r-key"),
    ("same-as-embed-not-persisted", "e-key", "e-key", "e-key", "e-key", None),
]


@pytest.mark.parametrize("embed, rerank, want_embed, want_rerank, stored",
                         [row[1:] for row in RERANK_TABLE], ids=[row[0] for row in RERANK_TABLE])
def test_rerank_key_rules(tmp_path: Path, embed: str | None, rerank: str | None,
                          want_embed: str | None, want_rerank: str | None,
                          stored: str | None) -> None:
    """RERANK_API_KEY follows the embed key when unset; its own key is persisted and readable."""
    data = DataDir(tmp_path)
    got = ApiKeys(data).resolve(embed, rerank, persistent=True, existing=False,
                            token_factory=fixed_key)
    assert (got.embed_key, got.rerank_key) == (want_embed, want_rerank)
    rerank_file = tmp_path / ".rerank_api_key"
    if stored is None:
        assert not rerank_file.exists()
    else:
        assert rerank_file.read_text() == stored and mode_of(rerank_file) == 0o600
        assert ApiKeys(data).read_rerank_key() == stored


def test_rerank_key_removed_when_it_equals_embed_key(tmp_path: Path) -> None:
    """A persisted reranker key disappears once it matches the embed key; reads fall back."""
    data = DataDir(tmp_path)
    ApiKeys(data).resolve("e-key", "r-key", persistent=True, existing=False)
    assert ApiKeys(data).read_rerank_key() == "r-key"
    ApiKeys(data).resolve("e-key", "e-key", persistent=True, existing=True)
    assert not (tmp_path / ".rerank_api_key").exists()
    assert ApiKeys(data).read_rerank_key() == "e-key" and ApiKeys(data).read_embed_key() == "e-key"


@pytest.mark.parametrize("embed, rerank, expected", [
    ("a", None, ("a",)), ("a", "b", ("a", "b")), (None, None, ()), (None, "b", ("b",))])
def test_secrets_lists_nonempty_keys(embed: str | None, rerank: str | None,
                                     expected: tuple[str, ...]) -> None:
    """KeyResolution.secrets lists each distinct non-empty key once, for log masking."""
    assert KeyResolution(embed, rerank, "given").secrets == expected


@pytest.mark.parametrize("code, exit_code", [(errno.ENOSPC, 1), (errno.EACCES, 2)])
def test_key_write_failure_hides_key(tmp_path: Path, code: int, exit_code: int) -> None:
    """A failed key write raises a LauncherError naming the file but never the key."""
    def failing(path: Path, data: str | bytes, mode: int, durable: bool = True) -> None:
        raise OSError(code, os.strerror(code), str(path))

    with pytest.raises(LauncherError) as caught:
        ApiKeys(DataDir(tmp_path, writer=failing)).resolve(
            "super-secret-key", None, persistent=True, existing=False)
    assert caught.value.exit_code == exit_code
    assert ".api_key" in caught.value.message
    assert "super-secret-key" not in caught.value.message


# -- atomic_write ----------------------------------------------------------------------------

def test_atomic_write_failure_keeps_old_content(tmp_path: Path) -> None:
    """When writing fails midway the old file is untouched and no temp file is left behind."""
    target = tmp_path / ".model"
    atomic_write(target, "old")

    def half_then_fail(fd: int, data: bytes) -> None:
        os.write(fd, data[:2])
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(target, "new-content", write=half_then_fail)
    assert target.read_text() == "old"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("mode, umask", [(0o600, 0), (0o600, 0o022), (0o644, 0o077)])
def test_atomic_write_temp_has_final_mode(tmp_path: Path, mode: int, umask: int) -> None:
    """The temp file already has the final mode while data is written, whatever the umask."""
    seen: list[int] = []

    def recording(fd: int, data: bytes) -> None:
        seen.append(stat.S_IMODE(os.fstat(fd).st_mode))
        os.write(fd, data)

    old_umask = os.umask(umask)
    try:
        atomic_write(tmp_path / "f", b"x", mode, write=recording)
    finally:
        os.umask(old_umask)
    assert seen == [mode] and mode_of(tmp_path / "f") == mode
    assert (tmp_path / "f").read_bytes() == b"x"


# -- container and persistence ---------------------------------------------------------------

@pytest.mark.parametrize("files, environ, expected", [
    ({"/.dockerenv"}, {}, True),
    ({"/run/.containerenv"}, {}, True),
    (set(), {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, True),
    (set(), {"KUBERNETES_SERVICE_HOST": ""}, False),
    (set(), {}, False),
])
def test_in_container(files: set[str], environ: dict[str, str], expected: bool) -> None:
    """Docker/Podman marker files or a Kubernetes service host mean we run in a container."""
    assert in_container(environ, exists=files.__contains__) is expected


MOUNTS_ROOT = "overlay / overlay rw,relatime 0 0\nproc /proc proc rw 0 0\n"


@pytest.mark.parametrize("data_dir, container, mounts, expected", [
    ("/var/lib/embeddings", False, "", True),
    ("/var/lib/embeddings", True, MOUNTS_ROOT, False),
    ("/var/lib/embeddings", True,
     MOUNTS_ROOT + "/dev/sda1 /var/lib/embeddings ext4 rw 0 0\n", True),
    ("/var/lib/embeddings/", True,
     MOUNTS_ROOT + "/dev/sda1 /var/lib/embeddings ext4 rw 0 0\n", True),
    ("/data/embeddings", True, MOUNTS_ROOT + "/dev/sda1 /data ext4 rw 0 0\n", True),
    ("/var/lib/embeddings", True, MOUNTS_ROOT + "/dev/sda1 /var/lib/embeddings-old ext4 rw 0 0\n",
     False),
    ("/var/lib/embeddings", True, MOUNTS_ROOT + "tmpfs /var/lib/embeddings/sub tmpfs rw 0 0\n",
     False),
    ("/my data/emb", True, MOUNTS_ROOT + "/dev/sdb /my\\040data ext4 rw 0 0\n", True),
    ("/my\\040data/emb", True, MOUNTS_ROOT + "/dev/sdb /my\\040data ext4 rw 0 0\n", False),
], ids=["bare-metal", "container-root-only", "mounted", "trailing-slash", "parent-mounted",
        "prefix-not-parent", "child-mount-only", "escaped-space", "escape-decoded"])
def test_is_persistent(data_dir: str, container: bool, mounts: str, expected: bool) -> None:
    """Always persistent outside a container; inside only if it or a parent (not /) is mounted."""
    assert is_persistent(Path(data_dir), in_container=container, mounts_text=mounts) is expected


# -- the directory itself ----------------------------------------------------------------------

@pytest.mark.parametrize("files, expected", [
    ((), False),
    (("models--BAAI--bge-small-en-v1.5/",), False),
    (("models--BAAI--bge-small-en-v1.5/", ".api_key.disabled"), False),
    (("models--BAAI--bge-small-en-v1.5/", ".server_addr"), True),
    ((".rerank_auth_enabled",), True),
])
def test_is_existing_install(tmp_path: Path, files: tuple[str, ...], expected: bool) -> None:
    """Only state files of an earlier start make an install existing; model caches do not."""
    for name in files:
        if name.endswith("/"):
            (tmp_path / name).mkdir()
        else:
            (tmp_path / name).write_text("x")
    assert DataDir(tmp_path).is_existing_install() is expected


def test_ensure_creates_directory_and_leaves_nothing(tmp_path: Path) -> None:
    """ensure() creates missing parents and removes its write probe."""
    target = tmp_path / "a" / "b"
    DataDir(target).ensure()
    assert target.is_dir() and list(target.iterdir()) == []


def test_ensure_under_regular_file_is_config_error(tmp_path: Path) -> None:
    """A path under a regular file fails with exit 2 naming the path, the user and the fix."""
    (tmp_path / "file").write_text("")
    target = tmp_path / "file" / "data"
    with pytest.raises(LauncherError) as caught:
        DataDir(target).ensure()
    message = caught.value.message
    assert caught.value.exit_code == 2
    assert str(target) in message and f"uid {os.geteuid()}" in message
    assert "chown -R" in message and "EMBED_DATA_DIR" in message
    assert "\n" not in message


# -- state and status files --------------------------------------------------------------------

STATE: dict[str, Any] = dict(embed_port=8000, embed_model="BAAI/bge-small-en-v1.5", embed_active=True,
             rerank_port=8001, rerank_model="BAAI/bge-reranker-v2-m3", rerank_active=False,
             embed_auth=True, rerank_auth=False, server_addr="203.0.113.7")


def test_state_files_have_no_trailing_newline(tmp_path: Path) -> None:
    """State files hold the bare value, 0/1 for flags, mode 0644, as the original wrote them."""
    DataDir(tmp_path).write_state(**STATE)
    contents = {name: (tmp_path / name).read_text() for name in STATE_FILES}
    assert contents == {
        ".port": "8000", ".model": "BAAI/bge-small-en-v1.5", ".server_addr": "203.0.113.7",
        ".embed_active": "1", ".rerank_active": "0", ".rerank_port": "8001",
        ".rerank_model": "BAAI/bge-reranker-v2-m3", ".embed_auth_enabled": "1",
        ".rerank_auth_enabled": "0",
    }
    assert {mode_of(tmp_path / name) for name in STATE_FILES} == {0o644}


def test_state_round_trip_and_server_addr_update(tmp_path: Path) -> None:
    """read_state returns what write_state wrote; write_server_addr changes only that file."""
    data = DataDir(tmp_path)
    data.write_state(**STATE)
    data.write_server_addr("192.0.2.1")
    assert data.read_state() == StateSnapshot(**{**STATE, "server_addr": "192.0.2.1"})
    assert leftovers(tmp_path) == []


def test_read_state_on_empty_dir(tmp_path: Path) -> None:
    """With no state files every field is None, and keys read as None."""
    data = DataDir(tmp_path)
    assert data.read_state() == StateSnapshot()
    assert ApiKeys(data).read_embed_key() is None and ApiKeys(data).read_rerank_key() is None


def test_read_state_ignores_garbage(tmp_path: Path) -> None:
    """Unparseable values read as None; surrounding whitespace from hand edits is ignored."""
    (tmp_path / ".port").write_text("eighty")
    (tmp_path / ".embed_active").write_text("yes")
    (tmp_path / ".rerank_port").write_text(" 8001\n")
    (tmp_path / ".model").mkdir()  # unreadable as a file
    state = DataDir(tmp_path).read_state()
    assert (state.embed_port, state.embed_active, state.rerank_port, state.embed_model) == (
        None, None, 8001, None)


def test_status_round_trip(tmp_path: Path) -> None:
    """write_status publishes JSON that read_status returns unchanged."""
    data = DataDir(tmp_path)
    status = {"embed": {"state": "RUNNING", "restarts": 1}, "rerank": None, "pid": 1}
    data.write_status(status)
    assert data.read_status() == status
    assert mode_of(tmp_path / ".status.json") == 0o644


@pytest.mark.parametrize("content", [None, "{not json", "[1, 2]", ""])
def test_read_status_missing_or_bad(tmp_path: Path, content: str | None) -> None:
    """A missing, unparseable or non-object status file reads as None."""
    if content is not None:
        (tmp_path / ".status.json").write_text(content)
    assert DataDir(tmp_path).read_status() is None
