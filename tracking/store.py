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

The ledger's database is the home's SQLite file unless `$GATELAB_MLFLOW_BACKEND` names a PostgreSQL database
(`postgresql://user:password@host:port/db`): MLflow's advice for a shared tracking server, which many trials
write to at once (docs/cluster.md, "The ledger's database"). Artifacts stay in the home either way. A home
remembers the database its server first used (`<home>/mlflow-backend.txt`, the password left out) and refuses
another, so one grid's runs never end up split over two ledgers.

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
BACKEND_ENV = "GATELAB_MLFLOW_BACKEND"  # a postgresql:// URI; unset: the home's SQLite file
SERVER_WORKERS_ENV = "GATELAB_MLFLOW_WORKERS"  # the server's worker processes (SQLite: always 1)
# The databases beyond SQLite that gatelab tests; SQLAlchemy 2.1 reads postgresql:// with psycopg 3.
SQL_BACKEND_SCHEMES = ("postgresql", "postgresql+psycopg")

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
    """Paths of one gatelab home and its ledger's database URI; build with `Store(home)` or `Store.open(cli)`."""

    home: Path
    """Absolute home directory."""
    backend: str | None = field(default=None, kw_only=True)
    """The ledger's database URI when not the SQLite file; None: $GATELAB_MLFLOW_BACKEND, else the SQLite file."""
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
    server_backend_path: Path = field(init=False)
    """The database the home's server uses when it is not the SQLite file (its URI without the password)."""
    tracking_uri: str = field(init=False)
    """The backend URI: `sqlite:///<abs path to mlflow.db>`, or $GATELAB_MLFLOW_BACKEND's database; clients
    normally use the server's http URI."""

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
            "server_backend_path": home / "mlflow-backend.txt",
        }
        # str(abs path) starts with "/", giving the four slashes SQLAlchemy expects for an absolute path.
        values["tracking_uri"] = self.backend or os.environ.get(BACKEND_ENV) or f"sqlite:///{values['db_path']}"
        for name, value in values.items():
            object.__setattr__(self, name, value)

    @property
    def is_sqlite(self) -> bool:
        return self.tracking_uri.startswith("sqlite:")

    @property
    def has_ledger(self) -> bool:
        """Whether there may be runs to read: the SQLite file exists, or a database server is named (the one
        this home uses: check_backend)."""
        self.check_backend()
        return self.db_path.exists() if self.is_sqlite else True

    @property
    def server_workers(self) -> int:
        """The server's worker processes: $GATELAB_MLFLOW_WORKERS, else 1 on SQLite (one writer at a time is all
        it allows) and half the machine's cores, at least 2, on a database server."""
        if self.is_sqlite:
            return 1
        raw = os.environ.get(SERVER_WORKERS_ENV)
        if raw is not None:
            if not raw.isdigit() or int(raw) < 1:
                raise ValueError(f"${SERVER_WORKERS_ENV}={raw!r}: expected a whole number of worker processes >= 1")
            return int(raw)
        return max(2, (os.cpu_count() or 2) // 2)

    def check_backend(self) -> None:
        """Refuse a backend other than the one this home's server first used (ValueError: one line, exit 2), and
        remember a database server's the first time."""
        scheme = self.tracking_uri.split("://", 1)[0]
        if not self.is_sqlite and scheme not in SQL_BACKEND_SCHEMES:
            raise ValueError(
                f"${BACKEND_ENV}: expected a postgresql:// URI (or unset, for the home's SQLite file), got a "
                f"{scheme}:// one"
            )
        shown = _without_password(self.tracking_uri) if not self.is_sqlite else "sqlite (the home's mlflow.db)"
        recorded = self.server_backend_path.read_text().strip() if self.server_backend_path.exists() else None
        if recorded is None and self.is_sqlite:
            return  # a home on SQLite, as every home starts
        if recorded is None and self.db_path.exists():
            raise ValueError(
                f"gatelab home {self.home} keeps its runs in its SQLite file {self.db_path}; ${BACKEND_ENV} names "
                f"{shown}: use a fresh home for a database server"
            )
        if recorded is None:
            if self.home.is_dir():
                self.server_backend_path.write_text(shown + "\n")
        elif recorded != shown:
            raise ValueError(
                f"gatelab home {self.home} keeps its runs in {recorded} ({self.server_backend_path.name}); "
                f"${BACKEND_ENV} gives {shown}: set it to that database, or use another home"
            )

    @classmethod
    def open(cls, cli_value: str | None = None, *, backend: str | None = None) -> Store:
        """The store of `resolve_home(cli_value)`, its backend checked (check_backend) before its folders are
        created."""
        store = cls(resolve_home(cli_value), backend=backend)
        store.check_backend()
        return store.ensure()

    def ensure(self) -> Store:
        """Create the home and its folders if missing; returns self. A file in the way is bad input (a ValueError,
        so the CLI says one line and exits 2), not a traceback."""
        for path in self._folders:
            try:
                path.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                raise self._file_in_the_way() from None
        return self

    def check_folders(self) -> None:
        """The ValueError `ensure` would raise for a file where the home or one of its folders goes, creating
        nothing: for a command that checks its input before it makes the home."""
        for path in self._folders:
            for folder in (path, *path.parents):
                if folder.exists():
                    if not folder.is_dir():
                        raise self._file_in_the_way()
                    break

    @property
    def _folders(self) -> tuple[Path, ...]:
        return (self.home, self.artifacts_dir, self.checkpoints_dir, self.cache_dir)

    def _file_in_the_way(self) -> ValueError:
        return ValueError(
            f"gatelab home {self.home}: a file is in the way, expected a folder "
            f"(the home is --home, else ${HOME_ENV}, else ./{DEFAULT_HOME})"
        )


def _without_password(uri: str) -> str:
    from sqlalchemy.engine import make_url  # MLflow's own dependency: parses every form of database URI

    return make_url(uri).render_as_string(hide_password=True)
