"""What the command line prints, written once: tallies ("3 finished, 1 new") and aligned tables."""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Sequence


def tally(values: Iterable[str], empty: str = "") -> str:
    """'2 failed, 3 finished': how many of each value, in the values' sorted order; `empty` when there are none."""
    return ", ".join(f"{count} {value}" for value, count in sorted(Counter(values).items())) or empty


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], right: Sequence[int] = ()) -> list[str]:
    """The header and rows as lines of columns two spaces apart, each as wide as its widest cell; the columns
    whose index is in `right` are right-aligned (numbers), the others left-aligned. Trailing blanks dropped."""
    rows = [list(map(str, row)) for row in rows]
    widths = [max([len(header), *(len(row[i]) for row in rows)]) for i, header in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.rjust(width) if i in right else cell.ljust(width) for i, (cell, width) in enumerate(zip(cells, widths))
        ).rstrip()

    return [line(headers), *(line(row) for row in rows)]


def other_trials_line(experiment: str, other_runs: int, matched: int) -> str | None:
    """When no trial of the grid has a run but its experiment holds trial runs: they belong to other trials,
    most likely the same grid submitted with other `--set` overrides (which change the trials' keys)."""
    if matched or not other_runs:
        return None
    return (
        f"{other_runs} trial runs of experiment {experiment!r} match none of this grid's trials: pass the same "
        "--set overrides as the submit (they change the trials' keys), or the grid file changed since"
    )
