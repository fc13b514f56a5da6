"""Where a grid's results live and what is made of them, in four rooms whose imports run one way:
server/ (the home's MLflow server) <- runs/ (trackers, the ledger, histories: the only code that talks to MLflow
about runs) <- report/ (paper-style reports and figures) -> stats/ (pure statistics, shared with the driver).
tracking/store.py is the home's layout, which all of them use. This module re-exports what the grid driver
and the tests use most.

Rule for URIs and artifacts: gatelab processes log through the store's local `mlflow server`
(`local_server(store)` yields its http URI); experiments always get the artifact location
`mlflow-artifacts:/<experiment name>`, stored under `<home>/mlartifacts/`. The SQLite URI
(`Store.tracking_uri`) is the server's backend; a client may read run metadata through it directly, but
artifact transfers need the server.
"""

from gatelab.tracking.runs.mlflow_tracker import (
    STATUSES,
    MlflowTracker,
    ParamConflictError,
    get_or_create_experiment,
)
from gatelab.tracking.server.process import (
    ServerInfo,
    ServerStartError,
    ensure_server,
    is_healthy,
    local_server,
    running_server,
    stop_server,
    ui,
)
from gatelab.tracking.store import Store, experiment_artifact_location, resolve_home

__all__ = [
    "STATUSES",
    "MlflowTracker",
    "ParamConflictError",
    "ServerInfo",
    "ServerStartError",
    "Store",
    "ensure_server",
    "experiment_artifact_location",
    "get_or_create_experiment",
    "is_healthy",
    "local_server",
    "resolve_home",
    "running_server",
    "stop_server",
    "ui",
]
