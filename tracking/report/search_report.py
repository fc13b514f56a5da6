"""`gatelab report` of a grid with a `search:` block: every Optuna trial of every study, its best trial, final
loss and spike count against each numeric searched parameter (one series per study) or per value of a choice of
strings or bools (tracking/report/choice_figure.py, with its numbers in a table), and the largest stable value of each
numeric parameter by the sweep report's rule (tracking/stats/rows.py max_stable_lr).

The Optuna side (the journal's trials, their states and the best trial) is read by
grid/dispatch/search_study.py and handed over as plain data (SearchReportInput): this module reads only
MLflow (each trial's runs, by the trial keys Optuna stored) and writes the files, through the output folder,
document writers and parent-run logging it shares with tracking/report/grid_report.py (tracking/report/output.py).
"""

from __future__ import annotations

import math
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from gatelab.tracking.report.choice_figure import by_category, categories, choice_strip
from gatelab.tracking.report.document import Block, Figure, Heading, Paragraph, Table, write_document
from gatelab.tracking.report.figures import lr_sweep
from gatelab.tracking.report.output import publish_on_parent, report_folder, write_csv
from gatelab.tracking.runs.ledger import TrialRecord, trial_records
from gatelab.tracking.stats.rows import STABLE_MARGIN, max_stable_lr
from gatelab.trainer.config.metric_names import FINAL_VAL_LOSS, SPIKE_COUNT
from gatelab.trainer.config.outcome import DONE_STATUSES, Status

LR_KEY = "optim.lr"  # the searched field whose max stable value is also logged as max_stable_lr.<study>
_FILE_UNSAFE = re.compile(r"[^A-Za-z0-9_\-.]+")


@dataclass(frozen=True, kw_only=True)
class SearchParam:
    """A searched trial-config field as the report draws it."""

    key: str
    """Dotted key, e.g. optim.lr."""
    log: bool
    """Log-uniform: drawn on a log axis."""
    numeric: bool
    """Whether its values are numbers (a choice of strings or bools is drawn per value,
    tracking/report/choice_figure.py, and has no max stable value)."""
    choices: tuple = ()
    """A choice's values in the grid's order (the categories of its figure and table); () for a range."""


@dataclass(frozen=True, kw_only=True)
class SearchTrial:
    """One Optuna trial as the journal holds it."""

    number: int
    state: str
    """complete | pruned | diverged | failed | running | waiting (a diverged trial is Optuna's COMPLETE with
    the worst value or FAIL, told apart by its gatelab.error)."""
    value: float | None
    """The objective value told (inf for a diverged trial under `diverged: worst`)."""
    params: dict
    keys: tuple[str, ...]
    """The trial keys of its runs (one per grid point of the study)."""
    error: str | None = None


@dataclass(frozen=True, kw_only=True)
class SearchStudy:
    name: str
    """The Optuna study's name, `<grid>/<per values>`."""
    label: str
    """Its series name in tables and figures: the per values, or the grid's name when there is one study."""
    trials: tuple[SearchTrial, ...]
    best: int | None
    """The best trial's number (finite objective value), None before any."""


@dataclass(frozen=True, kw_only=True)
class SearchReportInput:
    grid: str
    experiment: str
    metric: str
    direction: str
    params: tuple[SearchParam, ...]
    studies: tuple[SearchStudy, ...]
    margin: float = STABLE_MARGIN


@dataclass(frozen=True, kw_only=True)
class SearchReport:
    files: tuple[Path, ...]
    """The report document first (or the csv tables), then the figures."""
    trials: dict
    """(study name, trial number) -> the trial's row as tabulated (state, value, params, final loss, spikes)."""
    max_stable: dict
    """Study name -> parameter key -> its largest stable value (None when none is stable)."""
    parent_run_id: str | None
    artifacts_logged: bool = False


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.fmean(finite) if finite else None


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def run_results(trial: SearchTrial, records: dict[str, TrialRecord]) -> list[TrialRecord]:
    """The trial's runs that exist in MLflow (a trial failed before its runs started has none)."""
    return [records[key] for key in trial.keys if key in records]


def stable_values(study: SearchStudy, param: SearchParam, records: dict, margin: float) -> float | None:
    """The largest stable value of `param` in the study, by the sweep's rule over every run of every trial
    (pruned runs end `killed`, which max_stable_lr ignores: a pruned trial is neither stable nor unstable)."""
    results = [
        (trial.params[param.key], record.status, record.metrics.get(FINAL_VAL_LOSS, math.nan))
        for trial in study.trials
        if param.key in trial.params
        for record in run_results(trial, records)
    ]
    return max_stable_lr(results, margin)


def _trial_row(trial: SearchTrial, records: dict) -> dict:
    runs = run_results(trial, records)
    finished = [r for r in runs if r.status == Status.FINISHED]
    return {
        "number": trial.number,
        "state": trial.state,
        "value": trial.value,
        "params": trial.params,
        FINAL_VAL_LOSS: _mean([r.metrics.get(FINAL_VAL_LOSS, math.nan) for r in finished]),
        SPIKE_COUNT: _mean([r.metrics.get(SPIKE_COUNT, math.nan) for r in runs if r.status in DONE_STATUSES]),
        "runs": ", ".join(f"{r.run_id[:8]} ({r.status})" for r in runs) or "none",
        "note": trial.error or "",
    }


def _points(inp: SearchReportInput, param: SearchParam, records: dict) -> dict[str, list[tuple]]:
    """Study label -> (the trial's value of `param`, status, final val loss, spike count) per run that has a
    result (a pruned or failed run has no final loss to draw), each run once: trials that asked the same values
    share one run (same trial key)."""
    out = {}
    for study in inp.studies:
        runs = {
            record.run_id: (
                trial.params[param.key],
                record.status,
                record.metrics.get(FINAL_VAL_LOSS, math.nan),
                float(record.metrics.get(SPIKE_COUNT, 0.0)),
            )
            for trial in study.trials
            if param.key in trial.params
            for record in run_results(trial, records)
            if record.status in DONE_STATUSES
        }
        out[study.label] = list(runs.values())
    return out


def _figures(inp: SearchReportInput, records: dict, stable: dict, out_dir: Path) -> list[tuple[Path, str]]:
    made = []
    for param in inp.params:
        path = out_dir / f"search_{_FILE_UNSAFE.sub('_', param.key)}.png"
        if not param.numeric:
            drawn = choice_strip(_points(inp, param, records), param.choices, path, key=param.key)
            if drawn is not None:
                made.append(
                    (drawn, f"Final val loss and spike count per value of {param.key}, every finished or diverged run")
                )
            continue
        drawn = lr_sweep(
            _points(inp, param, records),
            {study.label: stable[study.name].get(param.key) for study in inp.studies},
            path,
            xlabel=param.key + (" (log scale)" if param.log else ""),
            short=param.key,
            log=param.log,
        )
        if drawn is not None:
            made.append(
                (drawn, f"Final val loss and spike count against {param.key}, every finished run, one series per study")
            )
    return made


def _choice_tables(inp: SearchReportInput, records: dict) -> list[Block]:
    """Per searched choice of strings or bools: each study's runs summarised per value (the figure's numbers)."""
    items: list[Block] = []
    for param in inp.params:
        if param.numeric:
            continue
        points = _points(inp, param, records)
        labels = categories(param.choices, points)
        rows = [
            [label, value, str(s.runs), _fmt(s.loss), _fmt(s.spikes), str(s.diverged)]
            for label, study_points in points.items()
            for value, s in by_category(study_points, labels).items()
        ]
        items += [
            Heading(f"Per value of {param.key}"),
            Table(["Study", param.key, "Runs", "Final val loss (mean)", "Spikes (mean)", "Diverged"], rows),
        ]
    return items


def _tables(inp: SearchReportInput, rows: dict, stable: dict) -> tuple[list, list, list, list]:
    numeric = [p.key for p in inp.params if p.numeric]
    study_header = [
        "Study",
        "Trials",
        "Best trial",
        f"Best {inp.metric}",
        "Best params",
        *(f"Max stable {key}" for key in numeric),
    ]
    study_rows = []
    for study in inp.studies:
        counts: dict[str, int] = {}
        for trial in study.trials:
            counts[trial.state] = counts.get(trial.state, 0) + 1
        best = next((t for t in study.trials if t.number == study.best), None)
        study_rows.append(
            [
                study.label,
                ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "not started",
                f"#{best.number}" if best else "none",
                _fmt(best.value) if best else "–",
                " ".join(f"{k}={_fmt(v)}" for k, v in best.params.items()) if best else "–",
                *(_fmt(stable[study.name][key]) if stable[study.name][key] is not None else "none" for key in numeric),
            ]
        )
    keys = [p.key for p in inp.params]
    trial_header = ["Study", "Trial", "State", f"Objective ({inp.metric})", *keys, "Final val loss", "Spikes", "Runs"]
    trial_rows = []
    for study in inp.studies:
        for trial in study.trials:
            row = rows[(study.name, trial.number)]
            trial_rows.append(
                [
                    study.label,
                    f"#{trial.number}" + (" (best)" if trial.number == study.best else ""),
                    trial.state + (f": {row['note']}" if row["note"] and row["note"] != trial.state else ""),
                    _fmt(trial.value),
                    *(_fmt(trial.params.get(key)) for key in keys),
                    _fmt(row[FINAL_VAL_LOSS]),
                    _fmt(row[SPIKE_COUNT]),
                    row["runs"],
                ]
            )
    return study_header, study_rows, trial_header, trial_rows


def write_search_report(
    inp: SearchReportInput, uri: str, out_dir: Path, fmt: str = "md", *, publish: bool = True
) -> SearchReport:
    """Read the runs, tabulate, draw and write the report; with `publish`, log the files under `report/` and,
    when optim.lr is searched, `max_stable_lr.<study label>` on the grid's parent run. csv writes the tables
    only: search_studies.csv and search_trials.csv."""
    with report_folder(out_dir, fmt) as out_dir:
        return _write(inp, uri, out_dir, fmt, publish=publish)


def _write(inp: SearchReportInput, uri: str, out_dir: Path, fmt: str, *, publish: bool) -> SearchReport:
    records = trial_records(uri, inp.experiment)
    stable = {
        study.name: {p.key: stable_values(study, p, records, inp.margin) for p in inp.params if p.numeric}
        for study in inp.studies
    }
    rows = {(s.name, t.number): _trial_row(t, records) for s in inp.studies for t in s.trials}
    study_header, study_rows, trial_header, trial_rows = _tables(inp, rows, stable)
    if fmt == "csv":
        files = [
            write_csv(out_dir / "search_studies.csv", study_header, study_rows),
            write_csv(out_dir / "search_trials.csv", trial_header, trial_rows),
        ]
    else:
        pictures = _figures(inp, records, stable, out_dir)
        total = sum(len(s.trials) for s in inp.studies)
        items = [
            Heading(f"gatelab report: search {inp.grid}", level=1),
            Paragraph(
                f"MLflow experiment {inp.experiment!r}; {len(inp.studies)} Optuna stud"
                f"{'y' if len(inp.studies) == 1 else 'ies'}, {total} trials, {inp.direction} {inp.metric}. "
                f"Built {time.strftime('%Y-%m-%d %H:%M')} from the Optuna journal and the trials' MLflow runs."
            ),
            Heading("Studies"),
            Paragraph(
                "The best trial is the one with the best finite objective value. The max stable value of a "
                "searched parameter is the largest value whose runs neither diverged nor ended more than "
                f"{inp.margin:.0%} above the study's best final loss (the LR sweep's rule); pruned and failed "
                "runs count neither way. With several searched parameters the others vary too, so read it as "
                "where the study stayed stable, not as a controlled sweep."
            ),
            Table(study_header, study_rows),
            Heading("Trials"),
            Paragraph(
                "Every Optuna trial: its state (a diverged trial was told the worst value or failed, as the grid's "
                "`diverged:` says), the objective value told, its parameters, and its finished runs' final val "
                "loss and spike count (mean over the study's grid points)."
            ),
            Table(trial_header, trial_rows),
            *_choice_tables(inp, records),
            Heading("Figures"),
            *(Figure(path, caption) for path, caption in pictures),
        ]
        files = [write_document(items, out_dir, fmt, f"gatelab report: {inp.grid}"), *(p for p, _ in pictures)]
    metrics = {
        f"max_stable_lr.{_FILE_UNSAFE.sub('_', s.label)}": stable[s.name][LR_KEY]
        for s in inp.studies
        if stable[s.name].get(LR_KEY) is not None
    }
    parent, logged = publish_on_parent(uri, inp.experiment, inp.grid, files, metrics) if publish else (None, False)
    return SearchReport(
        files=tuple(files), trials=rows, max_stable=stable, parent_run_id=parent, artifacts_logged=logged
    )
