"""tracking/server_auth.py: the local MLflow server asks for credentials once it binds beyond loopback.

The server test binds a real server to this machine's own non-loopback address (the default route's interface)
and sends real requests: without credentials they are refused, gatelab's own clients (the ledger, an artifact
upload, the raw bulk-history route, a worker that shares only the home) get through.
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gatelab.grid.dispatch.worker import TrialJob
from gatelab.tracking import server as server_module
from gatelab.tracking.server_auth import (
    ServerAuthError,
    ensure_credentials,
    is_loopback,
    server_args,
    server_env,
    sign_in_note,
    uri_is_loopback,
)
from gatelab.tracking.store import Store
from gatelab.trainer.config.trial import CheckpointConfig, EvalConfig, ScheduleConfig, TrialConfig

CREDENTIAL_VARS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
TINY_TRIAL = TrialConfig(
    variant="g1_elementwise_sigmoid",
    schedule=ScheduleConfig(max_steps=2, batch_size=2, log_every=1),
    eval=EvalConfig(every=2, batches=1, long_context_factors=(1,)),
    checkpoint=CheckpointConfig(every=2, keep_last=1),
)
# A process that shares only the home with the server's (no credentials in its environment), as a trial's
# worker on another node: signing in to another server must not help it; run_grid_trial signs in by itself.
WORKER = """
import pickle, sys
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from gatelab.grid.dispatch.worker import run_grid_trial
from gatelab.tracking.server import use_server_credentials
from gatelab.tracking.store import Store

home, uri, job_path = sys.argv[1:]

def read(label):
    try:
        MlflowClient(uri).get_experiment_by_name("auth-grid")
        print(label + ": read")
    except MlflowException as error:
        print(label + (": refused" if "401" in str(error) else ": " + str(error)))

use_server_credentials(Store(home), uri.rsplit(":", 1)[0] + ":1")
read("other server")
read("own server")
print("trial:", run_grid_trial(pickle.loads(open(job_path, "rb").read())).status)
"""


@pytest.fixture
def no_client_credentials():
    """The test starts without MLflow client credentials, and leaves none behind (gatelab sets them in-process)."""
    saved = {name: os.environ.pop(name) for name in CREDENTIAL_VARS if name in os.environ}
    yield
    for name in CREDENTIAL_VARS:
        os.environ.pop(name, None)
    os.environ.update(saved)


def _own_address() -> str | None:
    """This machine's address on the default route's interface; None when it has none (or only loopback).
    Connecting a UDP socket sends nothing; it only picks the interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: any routable address works, none is contacted
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if is_loopback(address) or address == "0.0.0.0" else address


def test_loopback_is_told_apart_from_every_other_address():
    for host in ("127.0.0.1", "127.8.0.1", "localhost", "LOCALHOST", "::1", "[::1]"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "10.0.3.7", "192.168.1.2", "head-node", "::", "fd00::1"):
        assert not is_loopback(host), host
    assert uri_is_loopback("http://127.0.0.1:5000") and not uri_is_loopback("http://10.0.3.7:5000")


def test_a_loopback_server_stays_without_auth(tmp_path):
    store = Store(tmp_path / "home").ensure()
    assert server_args("127.0.0.1", 5000) == [] and server_env(store, "127.0.0.1") == {}
    assert "--app-name" not in server_module.server_command(store, 5000)  # the default host is loopback
    assert not store.server_credentials_path.exists() and not store.server_auth_config_path.exists()
    assert sign_in_note(store, "http://127.0.0.1:5000") is None


def test_credentials_are_made_once_and_only_their_owner_may_read_them(tmp_path):
    store = Store(tmp_path / "home").ensure()
    old_umask = os.umask(0)  # a permissive umask must not loosen the file: it is created 0600
    try:
        made = ensure_credentials(store)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(store.server_credentials_path.stat().st_mode) == 0o600
    assert ensure_credentials(store) == made  # read back, not made again
    assert len(made.password) >= 40 and made.password != made.secret_key
    assert [p.name for p in store.home.iterdir() if p.name.startswith("mlflow-auth")] == ["mlflow-auth.json"]


def test_a_lost_credentials_file_is_not_silently_replaced(tmp_path):
    store = Store(tmp_path / "home").ensure()
    store.server_auth_db_path.write_bytes(b"")  # the users of an earlier server, with its admin's password
    with pytest.raises(ServerAuthError, match=r"mlflow-auth\.db: .* mlflow-auth\.json, which is missing") as error:
        ensure_credentials(store)
    assert error.value.path == store.server_auth_db_path
    assert not store.server_credentials_path.exists()
    # From the command line: one line naming the file, exit 2, and no server started.
    result = subprocess.run(
        [sys.executable, "-m", "gatelab.grid.cli", "ui", "--home", str(store.home)],
        env={**os.environ, "GATELAB_MLFLOW_HOST": "10.0.0.1"},  # fails before it binds: any address will do
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"gatelab: error: {store.server_auth_db_path}: ")
    assert not store.server_state_path.exists() and not store.server_credentials_path.exists()


@pytest.mark.mlflow
def test_a_server_beyond_loopback_refuses_requests_without_credentials(tmp_path, monkeypatch, no_client_credentials):
    import requests

    from gatelab.tracking.bulk_history import histories
    from gatelab.tracking.ledger import open_trial_run, trial_records

    address = _own_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to bind the server to")
    monkeypatch.setattr(server_module, "HOST", address)  # what GATELAB_MLFLOW_HOST sets on a cluster head
    store = Store(tmp_path / "home").ensure()
    with server_module.local_server(store) as uri:
        assert uri.startswith(f"http://{address}:")
        credentials = json.loads(store.server_credentials_path.read_text())
        assert stat.S_IMODE(store.server_credentials_path.stat().st_mode) == 0o600
        assert stat.S_IMODE(store.server_auth_db_path.stat().st_mode) == 0o600  # the users' password hashes
        pid = server_module.read_state(store).pid
        assert credentials["password"].encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()  # `ps` shows it

        # Unauthenticated, or with a wrong password: refused with a basic-auth challenge, reads and writes alike.
        anonymous = requests.Session()
        anonymous.trust_env = False  # no ~/.netrc, no proxy: exactly what a stranger on the network sends
        search = f"{uri}/api/2.0/mlflow/experiments/search"
        create = f"{uri}/api/2.0/mlflow/experiments/create"
        bulk = f"{uri}/ajax-api/2.0/mlflow/metrics/get-history-bulk"
        refused = [
            anonymous.get(search, params={"max_results": 10}),
            anonymous.post(create, json={"name": "intruder"}),
            anonymous.get(bulk, params={"run_id": "r", "metric_key": "loss"}),
            anonymous.post(create, json={"name": "intruder"}, auth=(credentials["username"], "not-the-password")),
        ]
        assert [r.status_code for r in refused] == [401] * 4, [r.text[:200] for r in refused]
        assert all(r.headers.get("WWW-Authenticate", "").startswith("Basic") for r in refused)
        assert anonymous.get(f"{uri}/health").status_code == 200  # what gatelab's liveness check reads

        # gatelab's own clients: the ledger opens a trial run, logs a metric and an artifact, reads it back.
        assert os.environ["MLFLOW_TRACKING_USERNAME"] == credentials["username"]  # set where the URI came from
        tracker, existing = open_trial_run(uri, "auth-grid", None, "k1", "baseline [k1]", {"variant": "baseline"})
        assert existing is None
        tracker.log_metrics({"loss": 2.5}, step=1)
        (tmp_path / "note.txt").write_text("through the proxy")
        tracker.log_artifact(tmp_path / "note.txt")
        tracker.close()
        assert trial_records(uri, "auth-grid")["k1"].metrics["loss"] == 2.5  # what `gatelab status` reads
        assert histories(uri, [tracker.run_id], ["loss"]) == {tracker.run_id: {"loss": [(1, 2.5)]}}  # raw HTTP
        assert (store.artifacts_dir / "auth-grid").is_dir()
        names = anonymous.get(
            search, params={"max_results": 10}, auth=(credentials["username"], credentials["password"])
        )
        assert {e["name"] for e in names.json()["experiments"]} == {"auth-grid", "Default"}  # no "intruder"

        # A trial's worker on another node shares only the home: run_grid_trial signs in from there, and only
        # to that server (the job's tracking URI is the one the home records).
        job = TrialJob(
            key="w1",
            config=TINY_TRIAL,
            run_name="baseline [w1]",
            tags={},
            tracking_uri=uri,
            experiment="auth-grid",
            parent_run_id=None,
            checkpoint_root=str(store.checkpoints_dir),
            cache_dir=str(store.cache_dir),
            home=str(store.home),
        )
        (tmp_path / "job.pkl").write_bytes(pickle.dumps(job))
        env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_VARS}
        out = subprocess.run(
            [sys.executable, "-c", WORKER, str(store.home), uri, str(tmp_path / "job.pkl")],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.stdout.split("\n")[:3] == ["other server: refused", "own server: refused", "trial: finished"], (
            out.stdout + out.stderr
        )
        assert trial_records(uri, "auth-grid")["w1"].status == "finished"

        # `gatelab ui` in another shell finds the running server, which the browser will ask to sign in to: it
        # says where the password is, never the password (terminals are logged and shared).
        ui = subprocess.run(
            [sys.executable, "-m", "gatelab.grid.cli", "ui", "--home", str(store.home)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert ui.returncode == 0 and f"already running at {uri}" in ui.stdout, ui.stdout + ui.stderr
        assert f"user gatelab, the password is in {store.server_credentials_path}" in ui.stdout
        assert credentials["password"] not in ui.stdout + ui.stderr
