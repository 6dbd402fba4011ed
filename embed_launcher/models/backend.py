"""Which TEI binary runs, and which weight format it loads (ONNX for ORT builds, else candle's)."""

from __future__ import annotations

import mmap
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from embed_launcher.models.fileset import detect_backend
from embed_launcher.reporting.errors import EXIT_CONFIG, LauncherError

TEI_BINARY = "text-embeddings-router"
TEI_INSTALL_HINT = (
    "Use the embed-launcher Docker image (it ships TEI), install TEI "
    "(https://github.com/huggingface/text-embeddings-inference#local-install), "
    "or set EMBED_TEI_BIN to the binary's path."
)


def resolve_tei_bin(given: str | None, search_path: str) -> str:
    """The TEI binary to run, as an absolute path; a clear exit-2 error if it cannot run."""
    if given and "/" in given:
        path = Path(given)
        if not path.is_file():
            raise LauncherError(
                f"Error: EMBED_TEI_BIN={given} does not exist (TEI would exit 127). {TEI_INSTALL_HINT}", EXIT_CONFIG
            )
        if not os.access(path, os.X_OK):
            raise LauncherError(
                f"Error: EMBED_TEI_BIN={given} is not executable (TEI would exit 126). Fix: chmod +x {given}",
                EXIT_CONFIG,
            )
        return str(path.absolute())
    name = given or TEI_BINARY
    found = shutil.which(name, path=search_path)
    if found is None:
        source = f"EMBED_TEI_BIN={name}" if given else f"TEI binary '{name}'"
        raise LauncherError(f"Error: {source} was not found on PATH. {TEI_INSTALL_HINT}", EXIT_CONFIG)
    return found


ELF_MAGIC = b"\x7fELF"
ORT_MARKER = b"onnxruntime"  # ONNX Runtime's own strings, present in any TEI built with -F ort


def tei_has_ort(tei_bin: str) -> bool | None:
    """Whether the TEI binary contains ONNX Runtime; None when it cannot tell (a wrapper script).

    The binary is memory-mapped and searched, not read: it is 100+ MB with MKL linked in.
    """
    try:
        with open(tei_bin, "rb") as f:
            if f.read(4) != ELF_MAGIC:
                return None
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as image:
                return image.find(ORT_MARKER) != -1
    except (OSError, ValueError):
        return None


def tei_backend(setting: str, tei_bin: str | None, environ: Mapping[str, str]) -> str:
    """The weight format TEI will load (see models.detect_backend), inspecting the binary for "auto"."""
    has_ort = tei_has_ort(tei_bin) if setting == "auto" and tei_bin else None
    return detect_backend(setting, environ, has_ort)
