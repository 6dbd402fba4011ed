"""How the benchmarks print their results: one Markdown table, which docs/benchmarks.md takes as it is."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[str]], *,
                figures: Sequence[int] = ()) -> None:
    """``title`` on a line of its own, then the table; the columns numbered in ``figures`` hold numbers and
    are right-aligned."""
    print(f"\n{title}\n")
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---:" if i in figures else "---" for i in range(len(columns))) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
