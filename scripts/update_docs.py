#!/usr/bin/env python3
"""Regenerate the documents derived from the code.

- docs/configuration.md: the variable table, from the declarations (embed_launcher/config/variables.py);
- docs/models.md: the recommended-models table, from the catalogue (embed_launcher/models/fileset.py);
- embed.env.example: every variable, commented, with its default.

tests/test_docs.py fails when a generated part differs from what this script would write.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from embed_launcher.config.settings import render_env_example, render_variable_table  # noqa: E402
from embed_launcher.models.fileset import EMBEDDING_MODELS, RERANKER_MODELS, CatalogEntry  # noqa: E402

CONFIGURATION = ROOT / "docs" / "configuration.md"
MODELS = ROOT / "docs" / "models.md"
ENV_EXAMPLE = ROOT / "embed.env.example"
BEGIN, END = "<!-- BEGIN VARIABLES", "<!-- END VARIABLES -->"
CATALOGUE_BEGIN, CATALOGUE_END = "<!-- BEGIN CATALOGUE", "<!-- END CATALOGUE -->"


def _between(text: str, begin: str, end: str, generated: str) -> str:
    """``text`` with ``generated`` between the line starting ``begin`` and the ``end`` marker."""
    pattern = re.compile(rf"({re.escape(begin)}[^\n]*\n).*?({re.escape(end)})", re.S)
    if not pattern.search(text):
        raise SystemExit(f"update_docs: the markers {begin} … {end} are missing")
    return pattern.sub(lambda m: m.group(1) + generated.rstrip("\n") + "\n" + m.group(2), text)


def with_table(text: str) -> str:
    """A page's text with the generated variable table between its markers."""
    return _between(text, BEGIN, END, render_variable_table())


def render_catalogue() -> str:
    """The recommended models, embeddings and rerankers, as one Markdown table."""

    def row(kind: str, entry: CatalogEntry) -> str:
        default = " (default)" if entry.default else ""
        return f"| {kind} | `{entry.repo_id}`{default} | {entry.disk} | {entry.note} |"

    lines = ["| Kind | Model | Weights | Notes |", "|---|---|---:|---|"]
    lines += [row("embeddings", e) for e in EMBEDDING_MODELS] + [row("reranking", e) for e in RERANKER_MODELS]
    return "\n".join(lines) + "\n"


def with_catalogue(text: str) -> str:
    """A page's text with the generated catalogue table between its markers."""
    return _between(text, CATALOGUE_BEGIN, CATALOGUE_END, render_catalogue())


def main() -> None:
    CONFIGURATION.write_text(with_table(CONFIGURATION.read_text()))
    MODELS.write_text(with_catalogue(MODELS.read_text()))
    ENV_EXAMPLE.write_text(render_env_example())


if __name__ == "__main__":
    main()
