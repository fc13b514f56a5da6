"""`gatelab submit | resume | status | ui | stop-server` — the user's main job, on a laptop or a cluster (`ui` lives in
grid/cli/ui_command.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gatelab.grid.cli.arguments import add_home
from gatelab.grid.cli.dry_run import trial_rows, trial_table
from gatelab.grid.cli.ladder_dry_run import ladder_table
from gatelab.grid.cli.terminal import other_trials_line, table, tally
from gatelab.grid.cli.ui_command import add_ui_command
from gatelab.grid.dispatch.home_ledger import driver_tracking, ledger_records, reading_store
from gatelab.grid.spec.examples import WHERE_NAMES_RESOLVE
from gatelab.grid.spec.expand import expand
from gatelab.grid.spec.grid_file import load_grid
from gatelab.tracking.store import Store
from gatelab.trainer.config.metric_names import VAL_PPL

_records = ledger_records  # plan_command reads the ledger through these names too
_store_no_create = reading_store


def _load(args, cache_dir: Path | None = None):
    spec = load_grid(Path(args.grid), args.set or [], cache_dir=cache_dir)  # every validation error: exit 2
    return spec, expand(spec)


def cmd_submit(args: argparse.Namespace, retry_failed: bool = False) -> int:
    if not getattr(args, "dry_run", False):  # gatelab.submit / gatelab.resume; a search through Optuna's driver
        from gatelab.api_submit import checked_grid, run_grid

        grid, store = checked_grid(args.grid, args.set or [], args.home, retry_failed=retry_failed)
        if grid.spec.search is not None:  # an Optuna search over the grid's points (grid/dispatch/search.py)
            return _cmd_search(args, grid.spec, store, False)
        summary = run_grid(
            grid,
            store,
            progress="auto",  # a live table on a terminal, the plain lines when piped
            address=args.address,
            max_concurrent=args.max_concurrent,
            retry_failed=retry_failed,
        )
        print(summary)
        print(f"open the MLflow UI: gatelab ui --home {store.home}")
        return 0 if summary.ok else 1
    spec, trials = _load(args)
    store = _store_no_create(args.home)
    if spec.search is not None:
        return _cmd_search(args, spec, store, True)
    records = _records(spec, store)
    statuses = {k: r.status for k, r in records.items()}
    if args.json:
        print(json.dumps(trial_rows(spec, trials, statuses), indent=1, default=str))
    else:
        print(trial_table(spec, trials, statuses))
        if spec.ladder is not None:
            print(ladder_table(spec, trials))
    return 0


def _cmd_search(args: argparse.Namespace, spec, store: Store, dry_run: bool) -> int:
    """submit and resume alike: continue RUNNING Optuna trials, then ask until each study has n_trials."""
    from gatelab.grid.dispatch.search_study import search_rows, search_table

    if dry_run:
        print(json.dumps(search_rows(spec, store), indent=1, default=str) if args.json else search_table(spec, store))
        return 0
    from gatelab.grid.dispatch.search import run_search

    def run(uri: str) -> int:
        outcome = run_search(spec, store, uri, address=args.address, max_concurrent=args.max_concurrent)
        if outcome.busy:
            return 1
        for name, counts in outcome.counts.items():
            told = ", ".join(f"{n} {state.lower()}" for state, n in counts.items() if n)
            best = outcome.best.get(name)
            print(f"study {name}: {told or 'no trials'}" + (f"; best {best[0]:.4g} at {best[1]}" if best else ""))
        print(f"open the MLflow UI: gatelab ui --home {store.home}")
        return 1 if outcome.errors else 0

    with driver_tracking(spec, store) as uri:
        return run(uri)


def cmd_resume(args: argparse.Namespace) -> int:
    return cmd_submit(args, retry_failed=True)


STATUS_COLUMNS = ("key", "variant", "status", "step", VAL_PPL, "spikes", "elapsed", "overrides")


def cmd_status(args: argparse.Namespace) -> int:
    from gatelab.api_grid import load_grid as load
    from gatelab.api_status import grid_status

    grid = load(args.grid, args.set or [])
    spec = grid.spec
    if spec.search is not None:
        from gatelab.grid.dispatch.search_study import search_rows, search_table

        store = _store_no_create(args.home)
        print(json.dumps(search_rows(spec, store), indent=1, default=str) if args.json else search_table(spec, store))
        return 0
    found = grid_status(grid, _records(spec, _store_no_create(args.home)))  # the rows gatelab.status returns
    rows = [row.to_json() for row in found.rows]
    if args.json:
        verdicts = list(found.verdicts) if found.verdicts is not None else None
        print(json.dumps({"trials": rows, "verdicts": verdicts} if verdicts is not None else rows, indent=1))
        return 0
    cells = [
        (
            row.key,
            row.variant,
            row.status,
            f"{row.step}/{row.max_steps}",
            f"{row.val_ppl:.3f}" if row.val_ppl is not None else "-",
            f"{row.spikes:.0f}" if row.spikes is not None else "-",
            f"{row.elapsed_s:.0f}s" if row.elapsed_s is not None else "-",
            " ".join(f"{k}={v}" for k, v in row.overrides.items() if k != "variant"),
        )
        for row in found.rows
    ]
    header, *lines = table(STATUS_COLUMNS, cells, right=(3, 4, 5, 6))
    print(header)
    for line, row in zip(lines, found.rows):
        print(line + (f"\n{'':12} ! {row.error[:100]}" if row.error else ""))
    print(f"{len(rows)} trials: {tally(row.status for row in found.rows)}; {found.resources}")
    hint = other_trials_line(found.experiment, found.other_runs, sum(row.run_id is not None for row in found.rows))
    if hint:
        print(hint)
    if found.verdicts is not None:
        print(f"verdicts ({spec.seeds.metric}, variant - baseline, alpha {spec.seeds.alpha:g} over the grid):")
        for row in found.verdicts:
            print("  " + row["line"])
    return 0


def cmd_stop_server(args: argparse.Namespace) -> int:
    from gatelab.tracking.server.process import stop_server

    stopped = stop_server(_store_no_create(args.home))
    print("stopped the MLflow server" if stopped else "no MLflow server was running for this home")
    return 0


def add_grid_commands(commands) -> None:
    def common(parser, *, runs: bool) -> None:
        parser.add_argument("grid", help=f"grid: {WHERE_NAMES_RESOLVE}")
        parser.add_argument("--set", action="append", metavar="dotted.key=value", help="override a grid field")
        add_home(parser)
        if runs:
            parser.add_argument("--address", default=None, help="Ray address to join (default: a local Ray)")
            parser.add_argument("--max-concurrent", type=int, default=None, help="trials at once")

    submit = commands.add_parser("submit", help="run a grid's unfinished and new trials on Ray")
    common(submit, runs=True)
    submit.add_argument("--dry-run", action="store_true", help="print the trial table; start nothing")
    submit.add_argument("--json", action="store_true", help="with --dry-run: print JSON")
    submit.set_defaults(func=cmd_submit)
    resume = commands.add_parser("resume", help="rerun a grid's unfinished trials, failed ones too")
    common(resume, runs=True)
    resume.set_defaults(func=cmd_resume)
    status = commands.add_parser("status", help="one row per trial of a grid, from MLflow")
    common(status, runs=False)
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)
    add_ui_command(commands)
    stop = commands.add_parser("stop-server", help="stop the MLflow server a submit left running")
    add_home(stop)
    stop.set_defaults(func=cmd_stop_server)
