"""Looking up trial runs in MLflow by the tags gatelab writes."""
from __future__ import annotations

from dataclasses import dataclass

from mlflow.tracking import MlflowClient

from tracking.mlflow_tracker import STATUS_TAG


@dataclass(frozen=True)
class TrialRun:
    run_id: str
    """MLflow run id."""
    status: str
    """gatelab.status tag (running, finished, failed, diverged, killed)."""


def find_trial_run(tracking_uri: str, experiment: str, trial_key: str) -> TrialRun | None:
    """The newest run tagged with this trial key in the experiment, if any."""
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.trial_key = '{trial_key}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        return None
    return TrialRun(runs[0].info.run_id, runs[0].data.tags.get(STATUS_TAG, "running"))


def run_summary(tracking_uri: str, run_id: str) -> dict[str, float]:
    """Latest value of every metric of a run."""
    return dict(MlflowClient(tracking_uri=tracking_uri).get_run(run_id).data.metrics)
