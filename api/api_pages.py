"""`gatelab.mlflow_pages`: where a grid's runs are in the MLflow UI (its compare-runs page, with the parallel-
coordinates plot, and its runs table), as `gatelab ui GRID` prints them (tracking/runs/ui_pages.py)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from gatelab.api_grid import Grid, as_grid
from gatelab.grid.dispatch.home_ledger import reading_store


def mlflow_pages(grid: Grid | str | Path, *, set: Sequence[str] = (), home: str | Path | None = None):
    """The grid's MLflow UI pages (tracking/runs/ui_pages.py `GridPages`: `compare`, `runs_table`, `run_ids`), served
    by the home's MLflow server, which is started if none runs and left running so the addresses keep working
    (`gatelab stop-server` stops it). None when the grid has no MLflow experiment yet (never submitted).

    >>> pages = gatelab.mlflow_pages("smoke")
    >>> print(pages.compare)    # open it in a browser: pick gate_* params and final_val_ppl
    """
    from gatelab.grid.dispatch.ray_jobs import experiment_name
    from gatelab.tracking.runs.ui_pages import grid_pages

    grid = as_grid(grid, set)
    keys = None if grid.spec.search is not None else [t.key for t in grid.expanded]  # a search: all its runs
    if grid.spec.tracking.uri:
        uri = grid.spec.tracking.uri.rstrip("/")
    else:
        from gatelab.tracking.server.process import ensure_server

        store = reading_store(home)
        if not store.has_ledger:
            return None
        uri = ensure_server(store)[0].uri
    return grid_pages(uri, experiment_name(grid.spec), keys)
