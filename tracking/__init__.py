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

from importlib import import_module

# Where each re-exported name lives. They load on first use (PEP 562), so a command that only reads the ledger
# (`gatelab status`: tracking/runs/ledger_database.py) does not pay MLflow's ~1 s import through this package.
_EXPORTS = {
    "STATUSES": "gatelab.tracking.runs.mlflow_tracker",
    "MlflowTracker": "gatelab.tracking.runs.mlflow_tracker",
    "ParamConflictError": "gatelab.tracking.runs.mlflow_tracker",
    "get_or_create_experiment": "gatelab.tracking.runs.mlflow_tracker",
    "ServerInfo": "gatelab.tracking.server.process",
    "ServerStartError": "gatelab.tracking.server.process",
    "ensure_server": "gatelab.tracking.server.process",
    "is_healthy": "gatelab.tracking.server.process",
    "local_server": "gatelab.tracking.server.process",
    "running_server": "gatelab.tracking.server.process",
    "stop_server": "gatelab.tracking.server.process",
    "ui": "gatelab.tracking.server.process",
    "Store": "gatelab.tracking.store",
    "experiment_artifact_location": "gatelab.tracking.store",
    "resolve_home": "gatelab.tracking.store",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
