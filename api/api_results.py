"""`gatelab.results` and `gatelab.compare`: a grid's runs as pandas DataFrames, in gatelab's own terms (trial keys,
gate axes, conditions, statuses, the current attempt's run), so a notebook need not rebuild them from MLflow.

The per-trial table comes from the home's ledger as stored (grid/dispatch/home_ledger.py: the home's database read
directly, nothing started); metric histories through the tracking server's bulk route, as the report reads them
(tracking/runs/bulk_history.py); the comparisons are the report's forest plot (tracking/report/grid_report.py
`comparisons_of`, tracking/stats/forest.py)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from gatelab.api_grid import Grid, as_grid
from gatelab.grid.dispatch.home_ledger import ledger_records, reading_store, reading_uri
from gatelab.grid.spec.conditions import condition_keys, condition_text
from gatelab.grid.spec.report_input import DEFAULT_MARGIN, ROW_AXES
from gatelab.grid.spec.trial_cost import training_flops
from gatelab.trainer.config.catalog import load_catalog
from gatelab.trainer.config.metric_names import FINAL_VAL_LOSS, FINAL_VAL_PPL, TRAIN_LOSS, VAL_LOSS
from gatelab.trainer.config.outcome import Status

if TYPE_CHECKING:
    import pandas

FIRST_METRICS = (FINAL_VAL_LOSS, FINAL_VAL_PPL)  # the headline columns, ahead of the rest (in name order)
HISTORY_METRICS = (TRAIN_LOSS, VAL_LOSS)  # what `history=True` reads unless `metrics` names others


def results(
    grid: Grid | str | Path,
    *,
    set: Sequence[str] = (),
    home: str | Path | None = None,
    metrics: Sequence[str] | None = None,
    history: bool = False,
) -> pandas.DataFrame:
    """One row per trial of the grid: key, variant, label, its gate family and design axes (gate_position,
    gate_granularity, ...), seed, lr, the grid's other axes (one column per dotted key, and `condition` in words,
    as the report's rows), status, attempt, run_id, error, est_flops, then its metrics' latest values
    (final_val_loss, final_val_ppl first; `metrics` picks which; one named as a column above, like the scheduled
    `lr`, is 'metric.lr'). A trial without a run is there with status 'new'.

    With `history=True`: a long table instead, one row per (trial, metric, step) with columns key, variant,
    family, seed, lr, condition, run_id, metric, step, value, for the metrics named (default train_loss and
    val_loss), read in bulk through the home's MLflow server (started for the read when none runs).

    >>> df = gatelab.results("smoke")
    >>> df.groupby("family")["final_val_loss"].mean()
    >>> curves = gatelab.results("smoke", history=True, metrics=["val_loss"])
    """
    import pandas

    grid = as_grid(grid, set)
    if grid.spec.search is not None:
        raise ValueError(
            f"grid {grid.name} is a search: its trials are Optuna's; `gatelab report` tabulates its studies"
        )
    store = reading_store(home)
    records = ledger_records(grid.spec, store)
    rows = _trial_rows(grid, records)
    latest = [row.pop("_metrics") for row in rows]
    if history:
        return _histories(grid, store, rows, tuple(metrics or HISTORY_METRICS))
    names = sorted({name for found in latest for name in found}) if metrics is None else list(metrics)
    names = [m for m in FIRST_METRICS if m in names] + [m for m in names if m not in FIRST_METRICS]
    fixed = frozenset(rows[0]) if rows else frozenset()
    for row, found in zip(rows, latest):  # `lr` is also a metric (the scheduled LR at the last step): kept apart
        row.update({f"metric.{n}" if n in fixed else n: found.get(n, float("nan")) for n in names})
    return pandas.DataFrame(rows)


def _trial_rows(grid: Grid, records: dict) -> list[dict]:
    """Each trial's fixed columns, its metrics under '_metrics'."""
    from gatelab.tracking.stats.forest import family

    spec, trials = grid.spec, list(grid.expanded)
    catalog = load_catalog(spec.base.catalog)
    keys = condition_keys(trials, ROW_AXES, spec)
    axis_names = list(dict.fromkeys(name for t in trials for name in catalog[t.config.variant].axes))
    rows = []
    for trial in trials:
        record = records.get(trial.key)
        axes = catalog[trial.config.variant].axes
        rows.append(
            {
                "key": trial.key,
                "variant": trial.config.variant,
                "label": trial.label,
                "family": family(axes),
                **{name: axes.get(name) for name in axis_names},
                "seed": trial.config.seed,
                "lr": trial.config.optim.lr,
                **{key: trial.overrides.get(key) for key in keys},
                "condition": condition_text(trial, keys),
                "status": record.status if record else Status.NEW.value,
                "attempt": record.attempt if record else 0,
                "run_id": record.run_id if record else None,
                "error": record.error if record else None,
                "est_flops": training_flops(trial),
                "_metrics": record.metrics if record else {},
            }
        )
    return rows


def _histories(grid: Grid, store, rows: list[dict], metrics: tuple[str, ...]) -> pandas.DataFrame:
    import pandas

    from gatelab.tracking.runs.bulk_history import histories

    ran = [row for row in rows if row["run_id"]]
    with reading_uri(grid.spec, store) as uri:
        found = histories(uri, [row["run_id"] for row in ran], metrics)
    columns = ["key", "variant", "family", "seed", "lr", "condition", "run_id", "metric", "step", "value"]
    long = [
        (*(row[c] for c in columns[:7]), metric, step, value)
        for row in ran
        for metric in metrics
        for step, value in found[row["run_id"]][metric]
    ]
    return pandas.DataFrame(long, columns=columns)


def compare(grid: Grid | str | Path, *, set: Sequence[str] = (), home: str | Path | None = None) -> pandas.DataFrame:
    """Each variant against the baseline, paired by seed under the same condition: the rows of the report's forest
    plot (tracking/stats/forest.py), one per comparison, with columns label, variant, condition, family, n (paired
    seeds), diff (mean of variant - baseline in `metric`), ci_low, ci_high, level (the interval's confidence),
    p_value (before Holm), verdict ('different', 'not significant', 'not tested'; a `seeds:` grid's own verdicts),
    paper (the paper's difference in the same units, where it publishes both), metric, and per_seed. The
    DataFrame's `attrs["method"]` says how the intervals and verdicts were made.

    >>> cmp = gatelab.compare("smoke")
    >>> cmp[cmp.verdict == "different"][["variant", "diff", "ci_low", "ci_high", "p_value"]]
    """
    import pandas

    from gatelab.grid.spec.report_input import report_input
    from gatelab.tracking.report.grid_report import comparisons_of

    grid = as_grid(grid, set)
    if grid.spec.search is not None:
        raise ValueError(f"grid {grid.name} is a search: its report compares its studies' trials, not variants")
    store = reading_store(home)
    with reading_uri(grid.spec, store) as uri:
        found = comparisons_of(report_input(grid.spec, list(grid.expanded), DEFAULT_MARGIN), uri)
    columns = ["label", "variant", "condition", "family", "n", "diff", "ci_low", "ci_high", "level", "p_value"]
    columns += ["verdict", "paper", "metric", "per_seed"]
    table = pandas.DataFrame(
        [
            (
                *(row.label, row.variant, row.condition, row.family, row.n, row.mean),
                *(row.ci if row.ci is not None else (None, None)),
                *(row.level, row.p_value, row.verdict, row.paper, found.metric, dict(row.per_seed)),
            )
            for row in found.rows
        ],
        columns=columns,
    )
    table.attrs["method"] = found.method
    return table
