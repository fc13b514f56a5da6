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
from gatelab.grid.spec.expand import expand
from gatelab.grid.spec.grid_file import load_grid
from gatelab.grid.spec.grid_spec import GridSpec
from gatelab.grid.spec.report_input import report_input, search_report_input


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
    from gatelab.tracking.report.grid_report import unfinished_trials, write_report
    from gatelab.tracking.server.process import local_server
    from gatelab.tracking.store import Store, resolve_home
    from gatelab.trainer.config.outcome import DONE_STATUSES

    spec = load_grid(Path(args.grid), args.set or [])
    store = Store(resolve_home(args.home))
    out_dir = Path(args.out) if args.out else store.reports_dir / spec.name
    # A search's trials are Optuna's, not the grid's expansion (which would list only its base points)
    inp = (
        search_report_input(spec, store, args.margin) if spec.search else report_input(spec, expand(spec), args.margin)
    )

    def run(uri: str) -> int:
        if spec.search:
            from gatelab.tracking.report.search_report import write_search_report

            _print_search(spec, inp, write_search_report(inp, uri, out_dir, args.format), out_dir)
            return 0
        report = write_report(inp, uri, out_dir, args.format)
        unfinished = unfinished_trials(inp, report.outcomes)
        done = sum(o.status in DONE_STATUSES for o in report.outcomes)
        print(f"grid {spec.name}: {len(report.rows)} variants, {done} trials done, {len(unfinished)} unfinished")
        for outcome in unfinished:
            print(f"  unfinished {outcome.trial.key} {outcome.trial.variant:30} {outcome.status}")
        hint = other_trials_line(inp.experiment, report.other_runs, sum(o.run_id is not None for o in report.outcomes))
        if hint:
            print(hint)
        print(f"wrote {report.files[0]} and {len(report.files) - 1} more file(s) in {out_dir}")
        if report.parent_run_id:
            where = "logged under report/ on" if report.artifacts_logged else "files not logged (no server URI) to"
            print(
                f"{where} the grid's parent run {report.parent_run_id}"
                + (f"; {len(report.max_stable)} max_stable_lr.* metrics logged" if report.max_stable else "")
            )
        else:
            print("the grid has no parent run in MLflow (never submitted?): nothing logged there")
        return 0

    if spec.tracking.uri:
        return run(spec.tracking.uri)
    if not store.has_ledger:
        raise ValueError(f"no MLflow store at {store.db_path}; run `gatelab submit {args.grid}` first (or pass --home)")
    with local_server(store) as uri:  # artifacts (probes.json, the report's files) move only through it
        return run(uri)


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
        default=0.05,
        help="max stable LR: how far (relative) above the best final loss still counts as stable",
    )
    report.set_defaults(func=cmd_report)
