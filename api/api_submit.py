"""`gatelab.submit` and `gatelab.resume`: run a grid's unfinished trials on Ray, blocking until each has a result.

The one implementation of `gatelab submit|resume GRID` (grid/cli/grid_commands.py prints what these return): the
ledger says which trials are not done, grid/dispatch/submit.py runs them through the one dispatch loop, and the
home's MLflow server records them. All state is in MLflow and on storage, so a resume after any kill (Ctrl-C
included) finishes what was left, each trial from its last checkpoint."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from gatelab.api_grid import Grid, as_grid, load_grid
from gatelab.grid.dispatch.home_ledger import driver_tracking, ledger_records, reading_store
from gatelab.grid.dispatch.progress import GridClock, PlainLines, ProgressView, Silent, Snapshot
from gatelab.grid.spec.trial_cost import training_flops
from gatelab.tracking.store import Store
from gatelab.trainer.config.outcome import DONE_STATUSES, Status

Progress = Literal["auto", "live", "bar", "lines", "none"]
"""How a submit shows progress: 'live' a table on a terminal (rich), 'bar' a progress bar (tqdm.auto: a widget in a
notebook), 'lines' the plain lines `gatelab submit` prints when piped, 'none' nothing; 'auto' (or True) picks the
bar in a notebook, the live table on a terminal, else plain lines."""


@dataclass(frozen=True, kw_only=True)
class SubmitSummary:
    """What a submit or resume did."""

    grid: str
    statuses: dict[str, str]
    """Trial key -> its status as this submit left it: finished, diverged, failed, or busy (run by another process)."""
    skipped: int
    """Trials already done (or failed, for a submit) before it began: left alone."""
    home: Path
    """The gatelab home it ran in (`gatelab ui --home HOME` opens its MLflow UI)."""
    timings: dict[str, dict] = field(default_factory=dict)
    """Per trial run here: wall_s (dispatch to result, seen by the driver) plus the worker's timings."""

    @property
    def done(self) -> int:
        """Trials finished or diverged (a divergence is a result)."""
        return sum(s in DONE_STATUSES for s in self.statuses.values())

    @property
    def failed(self) -> int:
        return sum(s == Status.FAILED for s in self.statuses.values())

    @property
    def busy(self) -> int:
        """Trials another process was running: a later submit or resume picks up their results."""
        return sum(s == Status.BUSY for s in self.statuses.values())

    @property
    def ok(self) -> bool:
        """No trial failed (what the CLI's exit status 0 means)."""
        return self.failed == 0

    def __str__(self) -> str:
        return f"grid {self.grid}: {self.done} done, {self.failed} failed, {self.busy} run by another process"


def submit(
    grid: Grid | str | Path,
    *,
    set: Sequence[str] = (),
    home: str | Path | None = None,
    address: str | None = None,
    max_concurrent: int | None = None,
    progress: bool | Progress = True,
    retry_failed: bool = False,
) -> SubmitSummary:
    """Run every trial of the grid that is not done yet, on a local Ray (or the cluster at `address`), and return
    once each has a result. Idempotent: done trials are skipped, so a resubmit runs only what is new. Failed trials
    are left alone unless `retry_failed` (what `resume` does). A search grid (`search:`) runs through `gatelab
    submit` only.

    >>> grid = gatelab.load_grid("smoke", set=["base.schedule.max_steps=20"])
    >>> summary = gatelab.submit(grid, max_concurrent=2)
    >>> summary.done, summary.failed
    (26, 0)
    """
    return _run(grid, set, home, address, max_concurrent, progress, retry_failed)


def resume(
    grid: Grid | str | Path,
    *,
    set: Sequence[str] = (),
    home: str | Path | None = None,
    address: str | None = None,
    max_concurrent: int | None = None,
    progress: bool | Progress = True,
) -> SubmitSummary:
    """`submit` that also reruns failed trials: after a crash, a kill or Ctrl-C, every unfinished trial continues
    from its last checkpoint, in the same MLflow run.

    >>> gatelab.resume("smoke").ok
    True
    """
    return _run(grid, set, home, address, max_concurrent, progress, True)


def _run(grid, overrides, home, address, max_concurrent, progress, retry_failed: bool) -> SubmitSummary:
    _choice(progress)  # a bad choice is bad input: refused before anything is made
    loaded, store = checked_grid(grid, overrides, home, retry_failed=retry_failed)
    if loaded.spec.search is not None:
        raise ValueError(
            f"grid {loaded.name} is a search (Optuna picks its trials): run it with `gatelab submit {loaded.source}`"
        )
    return run_grid(
        loaded, store, progress=progress, address=address, max_concurrent=max_concurrent, retry_failed=retry_failed
    )


def checked_grid(
    grid: Grid | str | Path, overrides: Sequence[str], home: str | Path | None, *, retry_failed: bool = False
) -> tuple[Grid, Store]:
    """The grid loaded as a submit needs it and the home's store, made. Every dataset is tokenized and checked
    unless the ledger already says there is nothing to run (grid/dispatch/settled.py: a no-op resubmit reads no
    data). Bad input, bad data included, fails before the home is made (its cache may be, holding the tokenized
    data)."""
    from gatelab.grid.dispatch.settled import settled_statuses

    given = as_grid(grid, overrides)
    checked = reading_store(home)
    loaded = load_grid(given.source, given.overrides)
    if settled_statuses(loaded.spec, list(loaded.expanded), checked, retry_failed=retry_failed) is None:
        loaded = load_grid(given.source, given.overrides, cache_dir=checked.cache_dir)
    return loaded, Store.open(str(checked.home))


def run_grid(
    grid: Grid,
    store: Store,
    *,
    progress: bool | Progress = True,
    address: str | None = None,
    max_concurrent: int | None = None,
    retry_failed: bool = False,
) -> SubmitSummary:
    """Run a plain or `seeds:` grid loaded by `checked_grid`: what `submit`, `resume` and `gatelab submit` do."""
    view = progress_view(progress)
    try:
        return _dispatch(grid, store, view, address, max_concurrent, retry_failed)
    finally:
        view.close()


def _dispatch(grid: Grid, store: Store, view, address, max_concurrent, retry_failed: bool) -> SubmitSummary:
    from gatelab.grid.dispatch.settled import kept_statuses, settled_statuses

    spec, trials = grid.spec, list(grid.expanded)
    settled = settled_statuses(spec, trials, store, retry_failed=retry_failed)
    if settled is not None:  # nothing to run or record: said from the ledger's database alone
        view.say(
            f"grid {spec.name}: {len(trials)} trials, {len(trials)} already done or failed, 0 to run ({store.home})"
        )
        return SubmitSummary(grid=spec.name, statuses=settled, skipped=len(trials), home=store.home)
    from gatelab.grid.dispatch.submit import submit as dispatch

    kept = kept_statuses(retry_failed)
    records = ledger_records(spec, store)
    to_run = {t.key for t in trials if t.key not in records or records[t.key].status not in kept}
    view.start(spec.name, GridClock({t.key: training_flops(t) for t in trials}, to_run), len(trials) - len(to_run))
    began = time.monotonic()
    with driver_tracking(spec, store) as uri:
        outcome = dispatch(
            spec,
            trials,
            store,
            uri,
            retry_failed=retry_failed,
            address=address,
            max_concurrent=max_concurrent,
            out=view.say,
            view=view,
        )
    ran = {key: s for key, s in outcome.statuses.items() if key in to_run}
    view.finish(Snapshot(headline="", running=(), queued=0, results=ran, elapsed_s=time.monotonic() - began))
    return SubmitSummary(
        grid=spec.name,
        statuses=dict(outcome.statuses),
        skipped=outcome.skipped,
        home=store.home,
        timings=outcome.timings,
    )


def progress_view(progress: bool | Progress, out: Callable[[str], None] = print) -> ProgressView:
    """The view a submit shows its progress in (see `Progress`)."""
    choice = _choice(progress)
    if choice == "live":
        from gatelab.live_table import LiveTable

        return LiveTable()
    if choice == "bar":
        from gatelab.progress_bar import ProgressBar

        return ProgressBar()
    if choice == "lines":
        return PlainLines(out)
    return Silent()


def _choice(progress: bool | Progress) -> str:
    """'live', 'bar', 'lines' or 'none': `progress` with True and 'auto' decided here."""
    choice = {True: "auto", False: "none"}.get(progress, progress) if isinstance(progress, bool) else progress
    if choice not in Progress.__args__:
        raise ValueError(f"progress={progress!r}: expected True, False or one of {Progress.__args__}")
    if choice == "auto":
        return "bar" if _in_notebook() else "live" if sys.stdout.isatty() else "lines"
    return choice


def _in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (where a terminal's live table cannot redraw)."""
    shell = sys.modules.get("IPython")
    try:
        return shell is not None and "IPKernelApp" in shell.get_ipython().config
    except AttributeError:  # IPython imported, but no shell running
        return False
