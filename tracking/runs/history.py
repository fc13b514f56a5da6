"""A run's metric history, read back: the search driver feeds each evaluation's validation loss to Optuna's
pruner (grid/dispatch/search.py) while the trial trains in another process."""

from __future__ import annotations

from mlflow.tracking import MlflowClient


def metric_history(uri: str, run_id: str, key: str) -> dict[int, float]:
    """Step -> value of metric `key` of run `run_id`, in step order (the latest value logged at a step wins)."""
    history = MlflowClient(tracking_uri=uri).get_metric_history(run_id, key)
    return {m.step: m.value for m in sorted(history, key=lambda m: (m.step, m.timestamp))}
