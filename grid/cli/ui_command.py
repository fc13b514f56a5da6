"""`gatelab ui [GRID]`: the MLflow UI of a home; with a grid, also the addresses of its compare-runs page and
its runs table, one click from the terminal (`--open` opens the compare page in a browser)."""

from __future__ import annotations

import argparse
import webbrowser
from collections.abc import Callable
from pathlib import Path

from gatelab.grid.cli.arguments import add_home
from gatelab.grid.spec.examples import WHERE_NAMES_RESOLVE
from gatelab.grid.spec.expand import expand
from gatelab.grid.spec.grid_file import load_grid
from gatelab.tracking.server.process import UI_PORT
from gatelab.tracking.store import Store
from gatelab.trainer.config.metric_names import FINAL_VAL_PPL


def cmd_ui(args: argparse.Namespace) -> int:
    from gatelab.tracking.server.process import ui

    if args.grid is None:
        store = Store.open(args.home)
        return ui(store, port=args.port, on_ready=_signed_in(store, _open if args.open else None))
    spec = load_grid(Path(args.grid), args.set or [])  # bad input: one line, exit 2, before any server starts
    from gatelab.grid.dispatch.ray_jobs import experiment_name

    # A search's trials are what Optuna sampled, not the grid's points: every trial run of its experiment.
    keys = None if spec.search is not None else [trial.key for trial in expand(spec)]

    def show(uri: str) -> None:
        _print_grid_pages(uri, spec.name, experiment_name(spec), keys, args.open)

    if spec.tracking.uri is None:
        store = Store.open(args.home)
        return ui(store, port=args.port, on_ready=_signed_in(store, show))
    if not spec.tracking.uri.startswith(("http://", "https://")):
        raise ValueError(
            f"grid {spec.name} logs to tracking.uri {spec.tracking.uri}, which is not an MLflow server's "
            "address; serve that store with `mlflow server` and open its UI there"
        )
    show(spec.tracking.uri.rstrip("/"))  # the grid's own server: nothing to start here
    return 0


def _signed_in(store: Store, then: Callable[[str], None] | None) -> Callable[[str], None]:
    """Once the UI answers: say where its password is when the server asks for one, then run `then`."""
    from gatelab.tracking.server.auth import sign_in_note

    def on_ready(uri: str) -> None:
        note = sign_in_note(store, uri)
        if note is not None:
            print(note, flush=True)
        if then is not None:
            then(uri)

    return on_ready


def _open(url: str) -> None:
    if not webbrowser.open(url):
        print("gatelab: found no browser to open; use the address above", flush=True)


def _print_grid_pages(uri: str, grid: str, experiment: str, keys: list[str] | None, open_browser: bool) -> None:
    from gatelab.tracking.runs.ui_pages import grid_pages

    pages = grid_pages(uri, experiment, keys)
    if pages is None or not pages.run_ids:
        print(f"gatelab: grid {grid} has no MLflow runs in this store yet (gatelab submit it first)", flush=True)
        if pages is not None:
            print(f"  runs table:    {pages.runs_table}", flush=True)
        if open_browser:
            _open(pages.runs_table if pages is not None else uri)
        return
    counted = f"{len(pages.run_ids)} of {len(keys)} trials" if keys is not None else f"{len(pages.run_ids)} trials"
    print(f"gatelab: grid {grid}: {counted} have runs in experiment {experiment}", flush=True)
    print(f"  compare runs:  {pages.compare}", flush=True)
    print(f"                 (parallel coordinates: pick gate_* params and {FINAL_VAL_PPL})", flush=True)
    print(f"  runs table:    {pages.runs_table}", flush=True)
    if open_browser:
        _open(pages.compare)


def add_ui_command(commands) -> None:
    ui = commands.add_parser("ui", help="the MLflow UI of this home; with GRID, its compare-runs page")
    ui.add_argument("grid", nargs="?", default=None, help=f"grid whose runs to compare: {WHERE_NAMES_RESOLVE}")
    ui.add_argument("--set", action="append", metavar="dotted.key=value", help="override a grid field")
    ui.add_argument("--open", action="store_true", help="open the page in a web browser")
    ui.add_argument("--port", type=int, default=UI_PORT)
    add_home(ui)
    ui.set_defaults(func=cmd_ui)
