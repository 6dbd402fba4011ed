"""embed_manage --getkey / --showkey: the API keys from the data directory (kept light: fast start)."""

from __future__ import annotations

import sys
from collections.abc import Mapping

from embed_launcher.datadir.directory import DataDir
from embed_launcher.datadir.keys import ApiKeys
from embed_launcher.manage.location import data_dir
from embed_launcher.reporting.console import Console
from embed_launcher.reporting.errors import EXIT_FAILURE, EXIT_OK, LauncherError
from embed_launcher.startup.banner import RULE


def current_keys(environ: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(embeddings key, reranker key) as the running server uses them; None where auth is off.

    The exec environment's EMBED_API_KEY wins (the original's rule); otherwise the key files.
    A service whose state file says auth is off has no key to show.
    """
    data = DataDir(data_dir(dict(environ)))
    state = data.read_state()
    keys = ApiKeys(data)
    embed = (environ.get("EMBED_API_KEY") or "").strip() or keys.read_embed_key()
    rerank = keys.read_rerank_key()
    if state.embed_auth is False:
        embed = None
    if state.rerank_auth is False:
        rerank = None
    return embed, rerank


def get_key(environ: Mapping[str, str]) -> int:
    """Print the raw key; exit 1 and print nothing when there is none.

    Bare when stdout is a pipe or a file (``KEY=$(embed_manage --getkey)`` and scripts rely on
    it); on a terminal the line is ended, so the shell prompt does not run into the key.
    """
    embed, rerank = current_keys(environ)
    key = embed or rerank
    if not key:
        return EXIT_FAILURE
    sys.stdout.write(key + ("\n" if sys.stdout.isatty() else ""))
    sys.stdout.flush()
    return EXIT_OK


def show_key(environ: Mapping[str, str], console: Console) -> int:
    """Show the key(s) in the original's box; both when the reranker has its own."""
    state = DataDir(data_dir(dict(environ))).read_state()
    if state.embed_auth is False and state.rerank_auth is False:
        raise LauncherError("Error: API key authentication is disabled for this container.")
    embed, rerank = current_keys(environ)
    if not embed and not rerank:
        raise LauncherError("Error: API key not found. Authentication may be disabled for this container.")
    boxes: list[tuple[str, str]] = []
    if embed and rerank and embed != rerank:
        boxes = [(" Embeddings API key", embed), (" Reranker API key", rerank)]
    else:
        boxes = [(" EmbedCrate API key", str(embed or rerank))]
    for title, key in boxes:
        console.lines(["", RULE, title, RULE, key, RULE, "", f'Use with: -H "Authorization: Bearer {key}"', ""])
    return EXIT_OK
