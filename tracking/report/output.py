"""Where a report's files go, shared by the grid report (tracking/report/grid_report.py) and the search report
(tracking/report/search_report.py): the output folder (format checked, folder made, MLflow's artifact progress bars
off while it is written), the CSV tables (the documents: tracking/report/document.py) and the
publishing on the grid's parent run (the files under `report/`, the max stable LRs as metrics)."""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from gatelab.trainer.config.run_tags import GRID_TAG, KIND_TAG

FORMATS = ("md", "html", "csv")
PROGRESS_BAR_VARIABLE = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


@contextmanager
def report_folder(out_dir: Path, fmt: str) -> Iterator[Path]:
    """The prologue of every report: `fmt` checked, `out_dir` made, and MLflow's progress bars off inside.
    MLflow draws one for every artifact it moves (each trial's probes.json, each figure), which buries the
    report's own lines; it reads the variable at each transfer, so it is set for the report only."""
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt!r}: expected one of {', '.join(FORMATS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    before = os.environ.get(PROGRESS_BAR_VARIABLE)
    os.environ[PROGRESS_BAR_VARIABLE] = "false"
    try:
        yield out_dir
    finally:
        if before is None:
            os.environ.pop(PROGRESS_BAR_VARIABLE, None)
        else:
            os.environ[PROGRESS_BAR_VARIABLE] = before


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows([["" if v is None else v for v in row] for row in rows])
    return path


def find_parent_run(client: MlflowClient, experiment: str, grid: str) -> str | None:
    """The grid's parent run (tags gatelab.kind=grid, gatelab.grid=<name>), if the grid was submitted."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs(
        [found.experiment_id],
        max_results=1,
        filter_string=f"tags.`{KIND_TAG}` = 'grid' and tags.`{GRID_TAG}` = '{grid}'",
    )
    return runs[0].info.run_id if runs else None


def publish_on_parent(
    uri: str, experiment: str, grid: str, files: list[Path], metrics: dict[str, float]
) -> tuple[str | None, bool]:
    """Log `files` under `report/` and `metrics` on the grid's parent run: (its run id or None when the grid
    has none, whether the files were logged)."""
    client = MlflowClient(tracking_uri=uri)
    parent = find_parent_run(client, experiment, grid)
    if parent is None:
        return None, False
    logged = _serves_artifacts(client, parent, uri)
    if logged:
        for path in files:
            client.log_artifact(parent, str(path), "report")
    if metrics:
        now = int(time.time() * 1000)
        client.log_batch(parent, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()])
    return parent, logged


def _serves_artifacts(client: MlflowClient, run_id: str, uri: str) -> bool:
    """Proxied artifacts (mlflow-artifacts:/...) move only through an http(s) server URI (tracking/store.py)."""
    proxied = client.get_run(run_id).info.artifact_uri.startswith("mlflow-artifacts:")
    return not proxied or uri.startswith(("http://", "https://"))
