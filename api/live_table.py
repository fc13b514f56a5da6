"""The live table `gatelab submit` shows on a terminal (rich): each running trial with its step bar, latest loss and
ETA; the counts of done, failed, running and queued trials; the grid's ETA from the dry run's cost estimate
(grid/dispatch/progress.py `GridClock`). Result lines print above the table as they arrive, as in the plain lines.
Piped or in CI, `gatelab submit` prints the plain lines instead (api/api_submit.py `progress_view`); in a notebook,
`gatelab.submit` shows a progress bar (api/progress_bar.py)."""

from __future__ import annotations

import time

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from gatelab.grid.dispatch.progress import GridClock, Snapshot, format_duration
from gatelab.trainer.config.outcome import DONE_STATUSES, Status

REFRESH_S = 2.0  # how often the loop reads the ledger for the table (the loop slows it down on a big grid)
SHOWN_ROWS = 20  # running trials listed; more are counted on one line


class LiveTable:
    """A `ProgressView` (grid/dispatch/progress.py) drawn with rich's Live display."""

    every_s = REFRESH_S

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self.live: Live | None = None
        self.grid, self.clock, self.already_done = "", GridClock({}, set()), 0
        self.started = time.monotonic()

    def start(self, grid: str, clock: GridClock, already_done: int) -> None:
        self.grid, self.clock, self.already_done = grid, clock, already_done
        self.started = time.monotonic()  # the elapsed time shown counts Ray's start too: what the user waited

    def say(self, line: str) -> None:
        # Above the live table while it runs; plain text (a trial's label may hold brackets rich would read as markup)
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def show(self, snapshot: Snapshot) -> None:
        if self.live is None:
            self.live = Live(
                render(self.grid, snapshot, self.clock, self.already_done, time.monotonic() - self.started),
                console=self.console,
                auto_refresh=False,
            )
            self.live.start()
        self.live.update(
            render(self.grid, snapshot, self.clock, self.already_done, time.monotonic() - self.started), refresh=True
        )

    def finish(self, snapshot: Snapshot) -> None:
        if self.live is not None:
            self.show(snapshot)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


def render(
    grid: str, snapshot: Snapshot, clock: GridClock, already_done: int = 0, elapsed_s: float | None = None
) -> Group:
    """The headline and the table of running trials (`already_done`: trials done before this submit; `elapsed_s`:
    since the submit began, else since the loop did)."""
    statuses = list(snapshot.results.values())
    done = sum(s in DONE_STATUSES for s in statuses)
    failed = sum(s == Status.FAILED for s in statuses)
    queued = max(len(clock.to_run) - len(snapshot.results) - len(snapshot.running), 0)
    head = Text.assemble(
        (f"grid {grid}", "bold"),
        f"  done {done}/{len(clock.to_run)}" + (f" (+{already_done} before)" if already_done else "") + "  ",
        (f"failed {failed}", "red" if failed else ""),
        f"  running {len(snapshot.running)}  queued {queued}",
        f"  | elapsed {format_duration(snapshot.elapsed_s if elapsed_s is None else elapsed_s)}"
        f"  ETA {format_duration(clock.eta_s(snapshot))}",
    )
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column, justify in (("trial", "left"), ("step", "left"), ("", "right"), ("loss", "right"), ("ETA", "right")):
        table.add_column(column, justify=justify)
    for trial in snapshot.running[:SHOWN_ROWS]:
        table.add_row(
            Text(trial.label or trial.key, overflow="ellipsis", no_wrap=True),
            ProgressBar(total=max(trial.max_steps, 1), completed=trial.step, width=24),
            f"{trial.step}/{trial.max_steps}",
            f"{trial.loss:.3f}" if trial.loss is not None else "-",
            format_duration(trial.eta_s),
        )
    extra = len(snapshot.running) - SHOWN_ROWS
    parts = (
        [head] + ([table] if snapshot.running else []) + ([Text(f"... and {extra} more running")] if extra > 0 else [])
    )
    return Group(*parts)
