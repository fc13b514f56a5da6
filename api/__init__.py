"""gatelab from Python: the functions the command line is built on, returning typed rows and pandas DataFrames.

    import gatelab

    grid = gatelab.load_grid("smoke", set=["base.schedule.max_steps=20"])
    gatelab.submit(grid)                      # blocks; a live table on a terminal, a progress bar in a notebook
    df = gatelab.results(grid)                # one row per trial: axes, seed, LR, status, metrics, run id
    gatelab.compare(grid)                     # each variant minus the baseline, paired by seed (the forest plot)
    gatelab.report(grid); gatelab.status(grid); gatelab.mlflow_pages(grid).compare

Every function takes a grid as loaded by `load_grid`, or a grid file's path or a shipped example's name (then
`set=` overrides it, as `--set` does), and `home=` (default: $GATELAB_HOME, else ./gatelab-runs). Bad input raises
the same typed errors as the CLI (`ConfigError` with file, line and key). docs/api.md is the reference.

Every `gatelab.*` import (a Ray worker's too) runs this file first, so it imports nothing itself: each name is
loaded from its module when first used (PEP 562), and `import gatelab` stays as fast as the CLI's start.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what a type checker and an editor see; at run time, __getattr__ below
    from gatelab.api_grid import Grid, TrialInfo, load_grid
    from gatelab.api_pages import mlflow_pages
    from gatelab.api_report import ReportSummary, report
    from gatelab.api_results import compare, results
    from gatelab.api_status import GridStatus, StatusRow, status
    from gatelab.api_submit import SubmitSummary, resume, submit
    from gatelab.grid.spec.config_loader import ConfigError

_HOMES = {
    "Grid": "gatelab.api_grid",
    "TrialInfo": "gatelab.api_grid",
    "load_grid": "gatelab.api_grid",
    "SubmitSummary": "gatelab.api_submit",
    "submit": "gatelab.api_submit",
    "resume": "gatelab.api_submit",
    "GridStatus": "gatelab.api_status",
    "StatusRow": "gatelab.api_status",
    "status": "gatelab.api_status",
    "results": "gatelab.api_results",
    "compare": "gatelab.api_results",
    "ReportSummary": "gatelab.api_report",
    "report": "gatelab.api_report",
    "mlflow_pages": "gatelab.api_pages",
    "ConfigError": "gatelab.grid.spec.config_loader",
}

__all__ = [
    "ConfigError",
    "Grid",
    "GridStatus",
    "ReportSummary",
    "StatusRow",
    "SubmitSummary",
    "TrialInfo",
    "compare",
    "load_grid",
    "mlflow_pages",
    "report",
    "results",
    "resume",
    "status",
    "submit",
]


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'gatelab' has no attribute {name!r}")
    value = getattr(import_module(_HOMES[name]), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
