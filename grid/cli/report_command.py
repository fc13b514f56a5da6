"""`gatelab report GRID`: the paper-style report of a grid, from what its MLflow runs hold now.

This side knows the grid (its trials, their seeds, LRs and other axis values) and the catalog (paper
references, published figures, extra parameters at each trial's own model); tracking/report/grid_report.py reads MLflow
and writes the files. No torch here (docs/design.md, layer rules: grid/ never imports it); mlflow only through tracking.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gatelab.grid.cli.arguments import add_home
from gatelab.grid.cli.terminal import other_trials_line
from gatelab.grid.spec.examples import WHERE_NAMES_RESOLVE
from gatelab.grid.spec.grid_spec import GridSpec
from gatelab.grid.spec.report_input import DEFAULT_MARGIN


def _print_search(spec: GridSpec, inp, report, out_dir: Path) -> None:
    for study in inp.studies:
        best = next((t for t in study.trials if t.number == study.best), None)
        told = ", ".join(f"#{t.number} {t.state}" for t in study.trials) or "not started"
        stable = " ".join(f"max stable {k}={v:.4g}" for k, v in report.max_stable[study.name].items() if v is not None)
        print(
            f"study {study.name}: {told}; best "
            + (f"#{best.number} {spec.search.objective.metric}={best.value:.4g}" if best else "none")
            + (f"; {stable}" if stable else "")
        )
    print(f"wrote {report.files[0]} and {len(report.files) - 1} more file(s) in {out_dir}")
    if report.parent_run_id:
        where = "logged under report/ on" if report.artifacts_logged else "files not logged (no server URI) to"
        print(f"{where} the grid's parent run {report.parent_run_id}")
    else:
        print("the grid has no parent run in MLflow (never submitted?): nothing logged there")


def cmd_report(args: argparse.Namespace) -> int:
    from gatelab.api_grid import load_grid as load
    from gatelab.api_report import report
    from gatelab.tracking.report.grid_report import unfinished_trials
    from gatelab.trainer.config.outcome import DONE_STATUSES

    grid = load(args.grid, args.set or [])
    summary = report(grid, home=args.home, out=args.out, format=args.format, margin=args.margin)
    spec, inp, written, out_dir = grid.spec, summary.inputs, summary.details, summary.out_dir
    if spec.search:
        _print_search(spec, inp, written, out_dir)
        return 0
    unfinished = unfinished_trials(inp, written.outcomes)
    done = sum(o.status in DONE_STATUSES for o in written.outcomes)
    print(f"grid {spec.name}: {len(written.rows)} variants, {done} trials done, {len(unfinished)} unfinished")
    for outcome in unfinished:
        print(f"  unfinished {outcome.trial.key} {outcome.trial.variant:30} {outcome.status}")
    hint = other_trials_line(inp.experiment, written.other_runs, sum(o.run_id is not None for o in written.outcomes))
    if hint:
        print(hint)
    print(f"wrote {written.files[0]} and {len(written.files) - 1} more file(s) in {out_dir}")
    if written.parent_run_id:
        where = "logged under report/ on" if written.artifacts_logged else "files not logged (no server URI) to"
        print(
            f"{where} the grid's parent run {written.parent_run_id}"
            + (f"; {len(written.max_stable)} max_stable_lr.* metrics logged" if written.max_stable else "")
        )
    else:
        print("the grid has no parent run in MLflow (never submitted?): nothing logged there")
    return 0


def add_report_command(commands) -> None:
    """Register `gatelab report` on the CLI's subparsers."""
    report = commands.add_parser("report", help="paper-style tables and figures of a grid")
    report.add_argument("grid", help=f"grid: {WHERE_NAMES_RESOLVE}")
    report.add_argument("--out", default=None, help="output folder (default <home>/reports/<grid name>)")
    report.add_argument(
        "--format",
        choices=("md", "html", "csv"),
        default="md",
        help="md: markdown table and figure links; html: one self-contained page; csv: the table",
    )
    report.add_argument("--set", action="append", metavar="dotted.key=value", help="override a grid field")
    add_home(report)
    report.add_argument(
        "--margin",
        type=float,
        default=DEFAULT_MARGIN,
        help="max stable LR: how far (relative) above the best final loss still counts as stable",
    )
    report.set_defaults(func=cmd_report)
