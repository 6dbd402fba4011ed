"""tiktoken for EMBED_TOKEN_INPUT=decode: its encodings found offline, its cache seeded from bpe-openai's files.

tiktoken downloads an encoding's file at first use and keeps it in TIKTOKEN_CACHE_DIR (else
`<tmp>/data-gym-cache`) under the sha1 of the file's URL. An offline server cannot download, so the gateway
copies the `.tiktoken.gz` files that the `bpe-openai` package ships (the same bytes, which tiktoken checks
against its own hash) into that cache first. `seed()` does the same for any client (LangChain's
OpenAIEmbeddings tokenizes with tiktoken too).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import importlib.util
import os
import tempfile
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path

from embed_launcher.gateway.dialects.openai import TIKTOKEN_ENCODING
from embed_launcher.reporting.errors import EXIT_CONFIG, LauncherError

BLOB_URLS = {name: f"https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
             for name in ("cl100k_base", "o200k_base")}
EXTRA = "pip install 'embed-launcher[tiktoken]'"


def cache_dir() -> Path:
    """Where tiktoken looks (its own rule)."""
    return Path(os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
                or Path(tempfile.gettempdir()) / "data-gym-cache")


def seed(directory: Path) -> list[str]:
    """Copy bpe-openai's encodings into tiktoken's cache ``directory`` (atomically; present ones are kept).
    Returns the encodings now there."""
    if importlib.util.find_spec("bpe_openai") is None:
        return [n for n, url in BLOB_URLS.items() if (directory / _key(url)).exists()]
    data = importlib.resources.files("bpe_openai") / "data"
    directory.mkdir(parents=True, exist_ok=True)
    present = []
    for name, url in BLOB_URLS.items():
        target, source = directory / _key(url), data / f"{name}.tiktoken.gz"
        if not target.exists() and source.is_file():
            _write_atomically(target, gzip.decompress(source.read_bytes()))
        if target.exists():
            present.append(name)
    return present


def _key(url: str) -> str:
    return hashlib.sha1(url.encode()).hexdigest()


def _write_atomically(path: Path, data: bytes) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@cache
def decoder(encoding: str = TIKTOKEN_ENCODING) -> Callable[[Sequence[int]], str]:
    """tiktoken's decoder for ``encoding``, loaded offline; a clear error naming the fix otherwise."""
    try:
        import tiktoken
    except ImportError:
        raise LauncherError(f"Error: EMBED_TOKEN_INPUT=decode needs tiktoken: {EXTRA}", EXIT_CONFIG) from None
    directory = cache_dir()
    if encoding not in seed(directory):
        raise LauncherError(f"Error: EMBED_TOKEN_INPUT=decode needs tiktoken's {encoding} encoding in {directory}"
                            f" (TIKTOKEN_CACHE_DIR), and it is not there: {EXTRA} ships it", EXIT_CONFIG)
    table = tiktoken.get_encoding(encoding)
    return lambda ids: table.decode(list(ids))
