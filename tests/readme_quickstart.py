"""The README's quick-start block: the commands a newcomer runs, which the image test runs as written."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEGIN = "<!-- quick-start"
END = "<!-- /quick-start -->"


def quick_start_script(readme: str | None = None) -> str:
    """The shell text of the marked ```sh block in README.md, exactly as printed there."""
    text = (ROOT / "README.md").read_text() if readme is None else readme
    start = text.index(BEGIN)
    block = re.search(r"```sh\n(.*?)```", text[start:text.index(END, start)], re.S)
    if block is None:
        raise AssertionError("README.md: the quick-start markers hold no ```sh block")
    return block[1]


def quick_start_commands(readme: str | None = None) -> list[str]:
    """The block's commands, one per entry, with backslash-continued lines joined."""
    joined = quick_start_script(readme).replace("\\\n", " ")
    return [" ".join(line.split()) for line in joined.splitlines() if line.strip()]
