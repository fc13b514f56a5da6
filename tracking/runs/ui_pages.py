"""Addresses of the MLflow UI's pages for one grid: the compare-runs page of its trials and its runs table.

MLflow 3.17's UI routes in the URL fragment (docs/libraries.md, MLflow): `#/compare-runs?runs=<JSON list of run
ids>&experiments=<JSON list of experiment ids>` is the page with the parallel-coordinates plot (it URI-decodes
the query before parsing the JSON, so the lists go percent-encoded: a terminal then keeps the whole address
clickable), and `#/experiments/<id>/runs?workflowType=machine_learning` is the runs table in the Model training
view (without the parameter an experiment opens in the GenAI view).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

from mlflow.tracking import MlflowClient

from gatelab.tracking.runs.ledger import trial_records


def _json_list(values: Sequence[str]) -> str:
    return quote(json.dumps(list(values), separators=(",", ":")), safe="")


def compare_runs_url(uri: str, run_ids: Sequence[str], experiment_ids: Sequence[str]) -> str:
    """The compare-runs page of `run_ids` (parallel coordinates, scatter, box and contour plots)."""
    return f"{uri}/#/compare-runs?runs={_json_list(run_ids)}&experiments={_json_list(experiment_ids)}"


def runs_table_url(uri: str, experiment_id: str) -> str:
    """The experiment's runs table in the Model training view."""
    return f"{uri}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


@dataclass(frozen=True)
class GridPages:
    """Where a grid's runs are in the UI."""

    experiment_id: str
    run_ids: tuple[str, ...]
    """The grid's trial runs, in the order of the keys asked for."""
    runs_table: str
    compare: str | None
    """None when none of the trials has a run yet."""


def grid_pages(uri: str, experiment: str, keys: Sequence[str] | None = None) -> GridPages | None:
    """The pages of the trials with these keys (None: every trial run of the experiment, as for a search, whose
    trials are not known in advance); None when the experiment does not exist yet."""
    found = MlflowClient(tracking_uri=uri).get_experiment_by_name(experiment)
    if found is None:
        return None
    records = trial_records(uri, experiment)
    run_ids = tuple(records[key].run_id for key in (records if keys is None else keys) if key in records)
    experiment_id = found.experiment_id
    compare = compare_runs_url(uri, run_ids, [experiment_id]) if run_ids else None
    return GridPages(experiment_id, run_ids, runs_table_url(uri, experiment_id), compare)
