"""Preflight: the TEI binary must be runnable and every port free, before anything is spawned."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from embed_launcher.models.backend import resolve_tei_bin, tei_backend, tei_has_ort
from embed_launcher.reporting.errors import LauncherError
from embed_launcher.startup.preflight import PortOwner, check_ports, port_in_use


def test_binary_on_path_is_found(tmp_path: Path) -> None:
    """With no EMBED_TEI_BIN, text-embeddings-router is looked up on PATH."""
    tei = tmp_path / "text-embeddings-router"
    tei.write_text("#!/bin/sh\n")
    tei.chmod(0o755)
    assert resolve_tei_bin(None, str(tmp_path)) == str(tei)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, "TEI binary 'text-embeddings-router' was not found on PATH"),
        ("tei-custom", "EMBED_TEI_BIN=tei-custom was not found on PATH"),
        ("/nonexistent/tei", "EMBED_TEI_BIN=/nonexistent/tei does not exist (TEI would exit 127)"),
    ],
)
def test_missing_binary_is_a_configuration_error(tmp_path: Path, given: str | None, expected: str) -> None:
    """Exit 2 with the variable to set and how to get TEI."""
    with pytest.raises(LauncherError) as info:
        resolve_tei_bin(given, str(tmp_path))
    assert info.value.exit_code == 2
    assert expected in info.value.message and "EMBED_TEI_BIN" in info.value.message


def test_non_executable_binary_says_chmod(tmp_path: Path) -> None:
    """A 0644 file: exit 2, naming the 126 it would cause and the fix."""
    tei = tmp_path / "tei"
    tei.write_text("#!/bin/sh\n")
    tei.chmod(0o644)
    with pytest.raises(LauncherError) as info:
        resolve_tei_bin(str(tei), "")
    assert info.value.exit_code == 2 and "chmod +x" in info.value.message and "126" in info.value.message


def test_a_listening_port_is_in_use_and_a_closed_one_is_not() -> None:
    """Tested the way TEI binds (SO_REUSEADDR): a listener blocks, nothing else does."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert port_in_use("127.0.0.1", port)
    assert not port_in_use("127.0.0.1", port)


def test_every_busy_port_is_reported_at_once_with_its_owner() -> None:
    """All conflicts in one message, each with its variable, owner and fix; exit 2."""
    long_path = "/opt/" + "x" * 150 + "/text-embeddings-router"  # shown truncated, still recognised
    busy = {8000: PortOwner(42, (long_path, "--port", "8000")), 18001: None}
    with pytest.raises(LauncherError) as info:
        check_ports(
            "0.0.0.0",
            [("EMBED_PORT", 8000), ("EMBED_PROMETHEUS_PORT", 18000), ("RERANK_PROMETHEUS_PORT", 18001)],
            in_use=lambda host, port: port in busy,
            owner=busy.get,
        )
    message = info.value.message
    assert info.value.exit_code == 2
    assert "port 8000 (EMBED_PORT) on 0.0.0.0 is already in use by pid 42" in message
    assert "looks like a TEI left over from an earlier start: stop it (kill 42)" in message
    assert "..." in message
    assert "port 18001 (RERANK_PROMETHEUS_PORT)" in message and "18000" not in message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"\x7fELF" + b"\0" * 4096 + b"...onnxruntime::InferenceSession..." + b"\0" * 64, True),
        (b"\x7fELF" + b"\0" * 4096 + b"candle only" + b"\0" * 64, False),
        (b"#!/bin/sh\nexec /usr/local/bin/text-embeddings-router \"$@\"\n", None),
    ],
)
def test_tei_has_ort_looks_inside_the_binary(tmp_path: Path, content: bytes, expected: bool | None) -> None:
    """An ELF binary with ONNX Runtime's strings has ORT; without, not; a wrapper script cannot tell."""
    tei = tmp_path / "text-embeddings-router"
    tei.write_bytes(content)
    assert tei_has_ort(str(tei)) is expected
    assert tei_has_ort(str(tmp_path / "missing")) is None


def test_auto_backend_is_candle_for_a_tei_built_without_ort(tmp_path: Path) -> None:
    """Bare metal `cargo install` (candle + MKL, no ORT): download safetensors, not ONNX."""
    tei = tmp_path / "text-embeddings-router"
    tei.write_bytes(b"\x7fELF" + b"\0" * 128)
    assert tei_backend("auto", str(tei), {}) == "candle"
    assert tei_backend("onnx", str(tei), {}) == "onnx"  # an explicit setting is never second-guessed
