"""Run only inside the network namespace that tests/test_server_auth.py makes (GATELAB_NETNS_ADDRESS names the
test address it put on that namespace's loopback interface): a real MLflow server bound beyond loopback runs the
basic-auth app. Requests without credentials, or with a wrong password, are refused; gatelab's own clients (the
ledger, an artifact upload, the raw bulk-history route, a worker that shares only the home) get through.

Not collected by a plain `pytest` run (its name does not start with test_): outside a namespace of its own it
would bind to, and send traffic to, an address beyond loopback.
"""

from __future__ import annotations

import json
import os
import pickle
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gatelab.grid.dispatch.worker import TrialJob
from gatelab.tracking.server import process as server_module
from gatelab.tracking.store import Store
from gatelab.trainer.config.trial import CheckpointConfig, EvalConfig, ScheduleConfig, TrialConfig

from grid_helpers import run_gatelab

NETNS_ADDRESS = "GATELAB_NETNS_ADDRESS"
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
from gatelab.tracking.server.process import use_server_credentials
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


def test_a_server_beyond_loopback_refuses_requests_without_credentials(tmp_path, monkeypatch, no_client_credentials):
    import requests

    from gatelab.tracking.runs.bulk_history import histories
    from gatelab.tracking.runs.ledger import TrialRun, open_trial_run, trial_records

    address = os.environ.get(NETNS_ADDRESS)
    if not address:
        pytest.fail(f"{NETNS_ADDRESS} is not set: run this file only through tests/test_server_auth.py")
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
        trial = TrialRun(
            uri=uri, experiment="auth-grid", key="k1", run_name="baseline [k1]", tags={"variant": "baseline"}
        )
        tracker, existing = open_trial_run(trial)
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
        ui = run_gatelab("ui", "--home", str(store.home), env=env, timeout=120)
        assert ui.returncode == 0 and f"already running at {uri}" in ui.stdout, ui.stdout + ui.stderr
        assert f"user gatelab, the password is in {store.server_credentials_path}" in ui.stdout
        assert credentials["password"] not in ui.stdout + ui.stderr
