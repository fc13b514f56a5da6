"""Where gatelab keeps its state on disk: one home directory per lab (docs/design.md, "State lives in MLflow
and on storage").

    <home>/mlflow.db            SQLite backend of the MLflow tracking server
    <home>/mlartifacts/         artifact root the server proxies (`--artifacts-destination`)
    <home>/checkpoints/         Lightning checkpoints, one folder per trial
    <home>/cache/               tokenised data and other rebuildable files
    <home>/locks/               flock files of the grids' parent runs and of searches
    <home>/optuna/              one Optuna journal per search grid (<grid>.journal)
    <home>/reports/             `gatelab report` output, one folder per grid (unless --out)
    <home>/mlflow-server.json   {pid, port, uri} of the live local server (tracking/server/process.py)
    <home>/mlflow-auth.json     the server's basic-auth credentials, mode 0600, when it binds beyond loopback
    <home>/mlflow-auth.ini      its auth config, and <home>/mlflow-auth.db its users (tracking/server/auth.py)

The home is `--home`, else `$GATELAB_HOME`, else `./gatelab-runs`.

Artifact locations (the one rule for the whole project): every experiment is created with the explicit
artifact location `mlflow-artifacts:/<experiment name>`, which the server maps to `<home>/mlartifacts/<name>`.
An experiment is therefore the same whether it was created through the server or directly against
`mlflow.db`, but artifact bytes only move through the server (HTTP tracking URI). Metadata (params, tags,
metrics, status) may be read directly from SQLite by a single process.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

HOME_ENV = "GATELAB_HOME"
DEFAULT_HOME = "gatelab-runs"

# Characters kept in an experiment's artifact folder name; anything else becomes "_".
_UNSAFE_PATH_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def resolve_home(cli_value: str | None = None) -> Path:
    """The gatelab home: the CLI value, else $GATELAB_HOME, else ./gatelab-runs; absolute, not created."""
    raw = cli_value or os.environ.get(HOME_ENV) or DEFAULT_HOME
    return Path(raw).expanduser().resolve()


def experiment_artifact_location(experiment_name: str) -> str:
    """Proxied artifact location of an experiment: the same string whichever URI created the experiment."""
    safe = _UNSAFE_PATH_CHARS.sub("_", experiment_name).strip("._") or "experiment"
    return f"mlflow-artifacts:/{safe}"


@dataclass(frozen=True)
class Store:
    """Paths of one gatelab home and the SQLite tracking URI; build with `Store(home)` or `Store.open(cli)`."""

    home: Path
    """Absolute home directory."""
    db_path: Path = field(init=False)
    """SQLite file of the MLflow backend store."""
    artifacts_dir: Path = field(init=False)
    """Artifact root served by the local MLflow server."""
    checkpoints_dir: Path = field(init=False)
    """Lightning checkpoints, one sub-folder per trial."""
    cache_dir: Path = field(init=False)
    """Rebuildable caches (tokenised corpora)."""
    locks_dir: Path = field(init=False)
    """flock files that serialise creating a grid's parent run, and one search driver per grid."""
    optuna_dir: Path = field(init=False)
    """Optuna journals, one per search grid."""
    reports_dir: Path = field(init=False)
    """Reports, one folder per grid."""
    server_state_path: Path = field(init=False)
    """JSON {pid, port, uri} of the live local MLflow server."""
    server_log_path: Path = field(init=False)
    """stdout/stderr of the local MLflow server."""
    server_lock_path: Path = field(init=False)
    """flock file that serialises starting/stopping the server across processes."""
    server_credentials_path: Path = field(init=False)
    """JSON {username, password, secret_key} of the server's basic auth (mode 0600; beyond loopback only)."""
    server_auth_config_path: Path = field(init=False)
    """MLflow's auth config (ini) for the server's basic-auth app; holds no secret."""
    server_auth_db_path: Path = field(init=False)
    """SQLite users and permissions of the server's basic-auth app."""
    tracking_uri: str = field(init=False)
    """`sqlite:///<abs path to mlflow.db>`: the backend URI; clients normally use the server's http URI."""

    def __post_init__(self) -> None:
        home = Path(self.home).expanduser().resolve()
        values = {
            "home": home,
            "db_path": home / "mlflow.db",
            "artifacts_dir": home / "mlartifacts",
            "checkpoints_dir": home / "checkpoints",
            "cache_dir": home / "cache",
            "locks_dir": home / "locks",
            "optuna_dir": home / "optuna",
            "reports_dir": home / "reports",
            "server_state_path": home / "mlflow-server.json",
            "server_log_path": home / "mlflow-server.log",
            "server_lock_path": home / "mlflow-server.lock",
            "server_credentials_path": home / "mlflow-auth.json",
            "server_auth_config_path": home / "mlflow-auth.ini",
            "server_auth_db_path": home / "mlflow-auth.db",
        }
        # str(abs path) starts with "/", giving the four slashes SQLAlchemy expects for an absolute path.
        values["tracking_uri"] = f"sqlite:///{values['db_path']}"
        for name, value in values.items():
            object.__setattr__(self, name, value)

    @classmethod
    def open(cls, cli_value: str | None = None) -> Store:
        """The store of `resolve_home(cli_value)`, with its folders created."""
        return cls(resolve_home(cli_value)).ensure()

    def ensure(self) -> Store:
        """Create the home and its folders if missing; returns self. A file in the way is bad input (a ValueError,
        so the CLI says one line and exits 2), not a traceback."""
        for path in (self.home, self.artifacts_dir, self.checkpoints_dir, self.cache_dir):
            try:
                path.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                raise ValueError(
                    f"gatelab home {self.home}: a file is in the way, expected a folder "
                    f"(the home is --home, else ${HOME_ENV}, else ./{DEFAULT_HOME})"
                ) from None
        return self
