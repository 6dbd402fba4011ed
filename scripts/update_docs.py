#!/usr/bin/env python3
"""Regenerate the documents derived from the variable declarations: README's table, embed.env.example."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from embed_launcher.config.settings import render_env_example, render_variable_table  # noqa: E402

BEGIN = "<!-- BEGIN VARIABLES"
END = "<!-- END VARIABLES -->"


def with_table(readme: str) -> str:
    """README text with the generated variable table between its markers."""
    pattern = re.compile(rf"({re.escape(BEGIN)}[^\n]*\n).*?({re.escape(END)})", re.S)
    return pattern.sub(lambda m: m.group(1) + render_variable_table().rstrip("\n") + "\n" + m.group(2), readme)


def main() -> None:
    readme = ROOT / "README.md"
    readme.write_text(with_table(readme.read_text()))
    (ROOT / "embed.env.example").write_text(render_env_example())


if __name__ == "__main__":
    main()
