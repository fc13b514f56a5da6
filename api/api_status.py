"""`gatelab.status`: one typed row per trial of a grid, from the home's ledger as stored. `gatelab status` prints
these rows (grid/cli/grid_commands.py); nothing is started to read them (the home's own database is read directly,
grid/dispatch/home_ledger.py)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gatelab.api_grid import Grid, as_grid
from gatelab.grid.dispatch.home_ledger import ledger_records, reading_store
from gatelab.trainer.config.metric_names import FINAL_VAL_PPL, SPIKE_COUNT, STEP, VAL_PPL
from gatelab.trainer.config.outcome import Status

if TYPE_CHECKING:
    import pandas


@dataclass(frozen=True, kw_only=True)
class StatusRow:
    """Where one trial stands."""

    key: str
    """The trial's key."""
    variant: str
    status: str
    """new (no run yet), running, finished, diverged, failed, killed (trainer/config/outcome.py `Status`)."""
    step: int
    """The latest step the trial logged."""
    max_steps: int
    val_ppl: float | None
    """The final validation perplexity once finished, else the latest one; None before the first evaluation."""
    spikes: float | None
    """Loss spikes counted so far (trainer/spikes.py)."""
    elapsed_s: float | None
    """Seconds since its run started (to its end, once ended); None without a run."""
    label: str
    run_id: str | None
    """Its MLflow run (the current attempt's); None without a run."""
    error: str | None
    """Why a failed trial failed."""
    overrides: dict
    """Dotted key -> value: what the grid's axes set in this trial."""

    def to_json(self) -> dict:
        """The row of `gatelab status --json` (the overrides left out: the label says them)."""
        row = asdict(self)
        row.pop("overrides")
        row[VAL_PPL] = row.pop("val_ppl")
        return {k: row[k] for k in _JSON_ORDER}


_JSON_ORDER = ("key", "variant", "status", "step", "max_steps", VAL_PPL, "spikes", "elapsed_s", "label", "run_id")
_JSON_ORDER += ("error",)


@dataclass(frozen=True, kw_only=True)
class GridStatus:
    """A grid's status: its rows, and what else the ledger says of it."""

    grid: str
    rows: tuple[StatusRow, ...]
    """One per trial, in the grid's order (a `seeds:` grid: only the seeds its verdicts asked for)."""
    verdicts: tuple[dict, ...] | None
    """A `seeds:` grid's comparisons with the baseline and their verdicts (grid/dispatch/adaptive.py); else None."""
    experiment: str
    """The grid's MLflow experiment."""
    resources: str
    """What each trial reserves, in words."""
    other_runs: int
    """Trial runs of the experiment that match none of these trials (another `set=`, an edited grid file)."""

    def counts(self) -> dict[str, int]:
        """Trials per status, e.g. {'finished': 6, 'new': 2}."""
        return dict(sorted(Counter(row.status for row in self.rows).items()))

    def frame(self) -> pandas.DataFrame:
        """The rows as a DataFrame, one column per field."""
        import pandas

        return pandas.DataFrame([asdict(row) for row in self.rows], columns=list(StatusRow.__dataclass_fields__))


def status(grid: Grid | str | Path, *, set: Sequence[str] = (), home: str | Path | None = None) -> GridStatus:
    """Each trial's status, step, perplexity and run, read from the home's ledger without starting anything.

    >>> st = gatelab.status("smoke")
    >>> st.counts()
    {'finished': 26}
    >>> st.frame()[["variant", "status", "val_ppl"]].head()
    """
    grid = as_grid(grid, set)
    spec = grid.spec
    if spec.search is not None:
        raise ValueError(
            f"grid {spec.name} is a search: its trials are Optuna's, not rows of the grid; "
            f"`gatelab status {spec.source}` lists its studies"
        )
    records = ledger_records(spec, reading_store(home))
    return grid_status(grid, records)


def grid_status(grid: Grid, records: dict) -> GridStatus:
    """The status of `grid` from ledger records (trial key -> TrialRecord)."""
    from gatelab.grid.dispatch.ray_jobs import experiment_name

    spec, trials = grid.spec, list(grid.expanded)
    now_ms = time.time() * 1000
    rows = []
    for trial in trials:
        record = records.get(trial.key)
        metrics = record.metrics if record else {}
        rows.append(
            StatusRow(
                key=trial.key,
                variant=trial.config.variant,
                status=record.status if record else Status.NEW.value,
                step=int(metrics.get(STEP, 0)),
                max_steps=trial.config.schedule.max_steps,
                val_ppl=metrics.get(FINAL_VAL_PPL, metrics.get(VAL_PPL)),
                spikes=metrics.get(SPIKE_COUNT),
                elapsed_s=((record.end_time_ms or now_ms) - record.start_time_ms) / 1000 if record else None,
                label=trial.label,
                run_id=record.run_id if record else None,
                error=record.error if record and record.status == Status.FAILED else None,
                overrides=dict(trial.overrides),
            )
        )
    verdicts = None
    if spec.seeds is not None:  # adaptive seeds: each comparison's verdict, from the same ledger
        from gatelab.grid.dispatch.adaptive import verdict_rows

        verdicts = tuple(verdict_rows(spec.seeds, trials, records))
        rows = [row for row in rows if row.key in records]  # the seeds not run (yet or ever) stay out
    return GridStatus(
        grid=spec.name,
        rows=tuple(rows),
        verdicts=verdicts,
        experiment=experiment_name(spec),
        resources=spec.resources.describe(),
        other_runs=len(set(records) - {t.key for t in trials}),
    )
