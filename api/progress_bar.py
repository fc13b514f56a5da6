"""`gatelab.submit(grid, progress=True)` in a notebook: one progress bar over the trials this submit runs (tqdm.auto:
a widget where ipywidgets is installed, else a text bar), its postfix the running and failed counts and the grid's
ETA from the dry run's cost estimate (grid/dispatch/progress.py `GridClock`). Result lines print beside it."""

from __future__ import annotations

import warnings

from gatelab.grid.dispatch.progress import GridClock, Snapshot, format_duration
from gatelab.trainer.config.outcome import Status

REFRESH_S = 5.0  # how often the loop reads the ledger for the bar


class ProgressBar:
    """A `ProgressView` (grid/dispatch/progress.py) as a tqdm bar."""

    every_s = REFRESH_S

    def __init__(self) -> None:
        with warnings.catch_warnings():  # without ipywidgets tqdm.auto warns, then draws a text bar: what we want
            warnings.simplefilter("ignore")
            from tqdm.auto import tqdm
        self.tqdm, self.bar, self.clock = tqdm, None, GridClock({}, set())

    def start(self, grid: str, clock: GridClock, already_done: int) -> None:
        self.clock = clock
        self.bar = self.tqdm(total=len(clock.to_run), desc=f"grid {grid}", unit="trial", dynamic_ncols=True)

    def say(self, line: str) -> None:
        if self.bar is None:
            print(line)
        else:
            self.bar.write(line)

    def show(self, snapshot: Snapshot) -> None:
        if self.bar is None:
            return
        self.bar.n = len(snapshot.results)
        failed = sum(s == Status.FAILED for s in snapshot.results.values())
        eta = format_duration(self.clock.eta_s(snapshot))
        self.bar.set_postfix_str(f"running {len(snapshot.running)}, failed {failed}, grid ETA {eta}", refresh=True)

    def finish(self, snapshot: Snapshot) -> None:
        self.show(snapshot)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
