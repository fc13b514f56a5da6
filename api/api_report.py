"""`gatelab.report`: the paper-style report of a grid (tables, figures, statistics), from what its MLflow runs hold
now; the one implementation of `gatelab report GRID` (grid/cli/report_command.py prints what this returns).

The grid side (its trials, seeds, LRs, conditions, the catalog's paper figures) is grid/spec/report_input.py; the
reading, tabulating and drawing is tracking/report/grid_report.py (tracking/report/search_report.py for a search)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gatelab.api_grid import Grid, as_grid
from gatelab.grid.spec.report_input import DEFAULT_MARGIN, report_input, search_report_input
from gatelab.tracking.store import Store, resolve_home

Format = Literal["md", "html", "csv"]
"""md: a markdown document and its figures; html: one self-contained page; csv: the tables only."""


@dataclass(frozen=True, kw_only=True)
class ReportSummary:
    """What `report` wrote."""

    grid: str
    out_dir: Path
    """The folder the files are in."""
    files: tuple[Path, ...]
    """The report document first (report.md, report.html or report.csv), then figures and numbers."""
    parent_run_id: str | None
    """The grid's parent run the files were logged to under report/ (None: the grid has none, never submitted)."""
    artifacts_logged: bool
    """Whether the files went to the parent run (artifacts move only through a server)."""
    details: Any
    """Everything the report computed: tracking/report/grid_report.py `Report` (rows, outcomes, forest, orderings),
    or tracking/report/search_report.py `SearchReport` for a search grid."""
    inputs: Any
    """What it was built from: the grid as the report reads it (`ReportInput` or `SearchReportInput`)."""

    @property
    def document(self) -> Path:
        """The report itself: open report.md or report.html."""
        return self.files[0]


def report(
    grid: Grid | str | Path,
    *,
    set: Sequence[str] = (),
    home: str | Path | None = None,
    out: str | Path | None = None,
    format: Format = "md",
    margin: float = DEFAULT_MARGIN,
) -> ReportSummary:
    """Write the grid's report into `out` (default <home>/reports/<grid name>) and log it on the grid's parent run.
    Unfinished trials are listed, not dropped; rerun it as trials finish. `margin`: how far (relative) above a
    variant's best final loss an LR still counts as stable.

    >>> summary = gatelab.report("smoke", format="html")
    >>> summary.document
    PosixPath('.../gatelab-runs/reports/smoke/report.html')
    """
    from gatelab.tracking.server.process import local_server

    if format not in Format.__args__:
        raise ValueError(f"format={format!r}: expected one of {Format.__args__}")
    grid = as_grid(grid, set)
    spec = grid.spec
    store = Store(resolve_home(None if home is None else str(home)))
    out_dir = Path(out) if out else store.reports_dir / spec.name
    # A search's trials are Optuna's, not the grid's expansion (which would list only its base points)
    inputs = (
        search_report_input(spec, store, margin) if spec.search else report_input(spec, list(grid.expanded), margin)
    )

    def write(uri: str):
        if spec.search:
            from gatelab.tracking.report.search_report import write_search_report

            return write_search_report(inputs, uri, out_dir, format)
        from gatelab.tracking.report.grid_report import write_report

        return write_report(inputs, uri, out_dir, format)

    if spec.tracking.uri:
        details = write(spec.tracking.uri)
    elif not store.has_ledger:
        raise ValueError(
            f"no MLflow store at {store.db_path}; run `gatelab submit {spec.source}` first (or pass --home)"
        )
    else:
        with local_server(store) as uri:  # artifacts (probes.json, the report's files) move only through it
            details = write(uri)
    return ReportSummary(
        grid=spec.name,
        out_dir=out_dir,
        files=tuple(details.files),
        parent_run_id=details.parent_run_id,
        artifacts_logged=details.artifacts_logged,
        details=details,
        inputs=inputs,
    )
