"""Basic auth for the local MLflow server when it binds beyond loopback (a cluster head's private address).

Why: an MLflow server without auth lets anything that reaches its port read, change or delete runs. On loopback
only the machine's own users reach it, as they could reach the home's files anyway, so it stays open there
(tracking/server/process.py). Beyond loopback, gatelab starts it with MLflow's own basic-auth app (`--app-name
basic-auth`, from the `mlflow[auth]` extra):

- credentials are made once per home with `secrets` and written to `<home>/mlflow-auth.json`, created with mode
  0600 (never loosened afterwards); on a cluster the home is on shared storage, so every node reads the same file;
- gatelab's own user is MLflow's admin, and every other user starts with NO_PERMISSIONS, so a request without
  credentials gets 401 and nothing is readable or writable without a grant;
- the password reaches the server through its environment, never its command line (which `ps` shows to every
  user), and reaches gatelab's clients as MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, which MLflow's
  clients (and their artifact uploads) send with every request. They are set in-process where gatelab resolves
  the server of a home (tracking/server/process.py), so processes started afterwards (a local Ray's workers) inherit
  them; a trial on another node signs in from the home its job names.

The users live in `<home>/mlflow-auth.db` (also 0600: it holds their password hashes); MLflow reads the admin
password only when it first creates that user.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

from gatelab.tracking.store import Store

ADMIN_USERNAME = "gatelab"
# The default for users other than the admin (MLflow's own default is READ): a user made through the UI's
# sign-up page sees nothing until an admin grants it.
DEFAULT_PERMISSION = "NO_PERMISSIONS"
_LOOPBACK_NAMES = {"localhost"}


class ServerAuthError(ValueError):
    """The home's server credentials are unreadable or no longer match its user database: the CLI's one-line
    error (exit 2), naming the file to fix."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        """The file at fault."""


@dataclass(frozen=True)
class ServerCredentials:
    """The home's MLflow server secrets, as stored in `<home>/mlflow-auth.json`."""

    username: str
    """MLflow admin user that every gatelab process signs in as."""
    password: str
    """Its password (256 random bits, URL-safe text)."""
    secret_key: str
    """Flask's secret key: the auth app's CSRF tokens must survive a restart of the server."""


def is_loopback(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1 (brackets allowed); False for any other address or name."""
    host = host.strip().strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def uri_is_loopback(uri: str) -> bool:
    """Whether an http tracking URI points at a loopback address (no auth needed there)."""
    return is_loopback(urlsplit(uri).hostname or "")


def read_credentials(store: Store) -> ServerCredentials | None:
    """The home's credentials; None when it has none yet. Unreadable or damaged: ServerAuthError."""
    path = store.server_credentials_path
    try:
        return ServerCredentials(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as error:
        raise ServerAuthError(
            path,
            f"cannot read the MLflow server's credentials ({error}); if the file is damaged, stop the server "
            f"(gatelab stop-server), delete it and {store.server_auth_db_path.name}, and start again",
        ) from error


def ensure_credentials(store: Store) -> ServerCredentials:
    """The home's credentials, made on first use. The caller holds the server lock (tracking/server/process.py)."""
    existing = read_credentials(store)
    if existing is not None:
        return existing
    if store.server_auth_db_path.exists():  # MLflow keeps the admin's first password: a new one would not work
        raise ServerAuthError(
            store.server_auth_db_path,
            f"holds the MLflow server's users with the password of {store.server_credentials_path.name}, which "
            "is missing; delete this file too to make new credentials",
        )
    made = ServerCredentials(
        username=ADMIN_USERNAME, password=secrets.token_urlsafe(32), secret_key=secrets.token_hex(32)
    )
    path = store.server_credentials_path
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    # Created 0600 from the start: never a moment in which another user could open it.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(asdict(made), handle)
        os.link(tmp, path)  # all or nothing, and never over a file another process wrote first
    except FileExistsError:
        return read_credentials(store)
    finally:
        tmp.unlink(missing_ok=True)
    return made


def server_args(host: str, port: int) -> list[str]:
    """Extra `mlflow server` arguments for a server bound to `host`: none on loopback; beyond it, the basic-auth
    app, and the bound address among the allowed Host headers (MLflow's default admits only loopback and
    private ranges; docs/libraries.md)."""
    if is_loopback(host):
        return []
    from mlflow.server.security_utils import get_default_allowed_hosts

    allowed = [*get_default_allowed_hosts(), host, f"{host}:{port}"]
    return ["--app-name", "basic-auth", "--allowed-hosts", ",".join(dict.fromkeys(allowed))]


def server_env(store: Store, host: str) -> dict[str, str]:
    """Environment for a server bound to `host`: none on loopback; beyond it, the home's credentials and auth
    config (written here). The caller holds the server lock."""
    if is_loopback(host):
        return {}
    credentials = ensure_credentials(store)
    # The users' password hashes: made 0600 here, before MLflow creates it with the default mode.
    os.close(os.open(store.server_auth_db_path, os.O_WRONLY | os.O_CREAT, 0o600))
    config = (
        "[mlflow]\n"
        f"default_permission = {DEFAULT_PERMISSION}\n"
        f"database_uri = sqlite:///{store.server_auth_db_path}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    tmp = store.server_auth_config_path.with_suffix(".ini.tmp")
    tmp.write_text(config)
    os.replace(tmp, store.server_auth_config_path)
    return {
        "MLFLOW_AUTH_CONFIG_PATH": str(store.server_auth_config_path),
        # Both set here, so a user's own MLFLOW_AUTH_ADMIN_* cannot make an admin gatelab does not know.
        "MLFLOW_AUTH_ADMIN_USERNAME": credentials.username,
        "MLFLOW_AUTH_ADMIN_PASSWORD": credentials.password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": credentials.secret_key,
    }


def use_credentials(store: Store, uri: str) -> None:
    """Sign this process's MLflow clients, and the processes it starts from now on, in to the home's server at
    `uri`. Nothing on loopback, nor for a home without credentials (a server started without auth)."""
    if uri_is_loopback(uri):
        return
    credentials = read_credentials(store)
    if credentials is None:
        return
    from mlflow.environment_variables import MLFLOW_TRACKING_PASSWORD, MLFLOW_TRACKING_USERNAME

    os.environ[MLFLOW_TRACKING_USERNAME.name] = credentials.username
    os.environ[MLFLOW_TRACKING_PASSWORD.name] = credentials.password


def request_auth() -> tuple[str, str] | None:
    """(user, password) for a raw HTTP request to the tracking server: what MLflow's own clients would send."""
    from mlflow.utils.credentials import read_mlflow_creds

    creds = read_mlflow_creds()
    return (creds.username, creds.password) if creds.username and creds.password else None


def sign_in_note(store: Store, uri: str) -> str | None:
    """What `gatelab ui` prints when the browser will ask for a password; None when it will not. The password
    itself is not printed: terminals are logged (tmux scrollback, `ray exec` output) and shared."""
    if uri_is_loopback(uri):
        return None
    with contextlib.suppress(ServerAuthError):
        if read_credentials(store) is None:
            return None
    return (
        f"gatelab: the browser will ask to sign in: user {ADMIN_USERNAME}, the password is in "
        f"{store.server_credentials_path} (readable by its owner only)"
    )
