"""How runs ended, read back from the server, and an experiment made for them: what a check that every run a
process ended is stored as ended needs (`gatelab bench ledger`, grid/bench/ledger.py), kept here because only
tracking/ talks to MLflow."""

from __future__ import annotations

from collections.abc import Iterable

from mlflow import MlflowClient

from gatelab.tracking.runs.mlflow_tracker import get_or_create_experiment
from gatelab.trainer.config.run_tags import STATUS_TAG


def ensure_experiment(uri: str, name: str) -> str:
    """The id of experiment `name` at `uri`, created if missing."""
    return get_or_create_experiment(MlflowClient(tracking_uri=uri), name)


def run_ends(uri: str, run_ids: Iterable[str]) -> dict[str, tuple[str, str | None]]:
    """run id -> (its MLflow status, its gatelab.status tag or None)."""
    client = MlflowClient(tracking_uri=uri)
    out = {}
    for run_id in run_ids:
        run = client.get_run(run_id)
        out[run_id] = (run.info.status, run.data.tags.get(STATUS_TAG))
    return out
