"""tracking/: a real MLflow store (SQLite + local `mlflow server`) in a temporary gatelab home.

One server is started per module (start-up takes seconds); the fixture checks on teardown that its whole
process group is gone.
"""

from __future__ import annotations

import inspect
import json
import math
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

from gatelab.tracking import (  # noqa: E402
    MlflowTracker,
    ParamConflictError,
    ServerStartError,
    Store,
    ensure_server,
    experiment_artifact_location,
    get_or_create_experiment,
    is_healthy,
    local_server,
    resolve_home,
    running_server,
    ui,
)
from gatelab.tracking.runs.outbox import batch_op, merged  # noqa: E402
from gatelab.tracking.server import process as server_module  # noqa: E402
from gatelab.trainer.config.run_tags import STATUS_TAG  # noqa: E402
from gatelab.trainer.tracker import Tracker  # noqa: E402

pytestmark = [pytest.mark.mlflow]

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(tmp_path_factory.mktemp("gatelab-home")).ensure()


@pytest.fixture(scope="module")
def server_uri(store: Store):
    with local_server(store) as uri:
        pid = running_server(store).pid
        yield uri
    assert not server_module._group_alive(pid), "mlflow server processes outlived local_server()"
    assert not store.server_state_path.exists()
    assert not is_healthy(uri)


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


# -- store ------------------------------------------------------------------------------------------------


def test_resolve_home_prefers_cli_then_env_then_default(tmp_path, monkeypatch):
    monkeypatch.setenv("GATELAB_HOME", str(tmp_path / "from-env"))
    assert resolve_home(str(tmp_path / "from-cli")) == tmp_path / "from-cli"
    assert resolve_home(None) == tmp_path / "from-env"
    monkeypatch.delenv("GATELAB_HOME")
    monkeypatch.chdir(tmp_path)
    assert resolve_home(None) == tmp_path / "gatelab-runs"


def test_store_paths_and_uri(tmp_path):
    store = Store(tmp_path / "home").ensure()
    assert store.db_path == tmp_path / "home" / "mlflow.db"
    assert store.tracking_uri == f"sqlite:///{tmp_path}/home/mlflow.db"
    assert store.tracking_uri.startswith("sqlite:////")  # absolute path
    for path in (store.artifacts_dir, store.checkpoints_dir, store.cache_dir):
        assert path.is_dir() and path.parent == store.home
    for path in (store.locks_dir, store.optuna_dir, store.reports_dir):  # made when first used
        assert path.parent == store.home
    with pytest.raises(AttributeError):
        store.home = tmp_path  # frozen


def test_experiment_artifact_location_is_a_safe_proxied_path():
    assert experiment_artifact_location("grid-a") == "mlflow-artifacts:/grid-a"
    assert experiment_artifact_location("my grid/../x") == "mlflow-artifacts:/my_grid_.._x"


# -- tracker ------------------------------------------------------------------------------------------------


def test_run_round_trip(server_uri, store, tmp_path):
    client = MlflowClient(server_uri)
    parent = MlflowTracker.create(server_uri, "roundtrip", run_name="grid")
    tracker = MlflowTracker.create(
        server_uri, "roundtrip", run_name="trial-1", parent_run_id=parent.run_id, tags={"variant": "g1"}
    )
    long_value = "x" * 7000
    tracker.log_params({"model.n_layers": 2, "optim.lr": 3e-4, "long": long_value})
    tracker.set_tags({"gate.position": "G1", "seed": 3})
    for step in range(0, 30, 3):
        tracker.log_metrics({"loss": 10.0 / (step + 1), "lr": step * 1e-5}, step=step)
    tracker.log_metrics({"loss": float("nan")}, step=31)
    artifact = tmp_path / "notes.txt"
    artifact.write_text("hello")
    tracker.log_artifact(artifact, "docs")
    tracker.log_text("a: 1\n", "config/resolved.yaml")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    tracker.log_figure(fig, "plots/loss.png")
    plt.close(fig)
    tracker.set_status("finished")

    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "trial-1"
    assert run.data.tags[STATUS_TAG] == "finished"
    assert run.data.tags["mlflow.parentRunId"] == parent.run_id
    assert run.data.tags["variant"] == "g1" and run.data.tags["seed"] == "3"
    assert run.data.params["model.n_layers"] == "2" and run.data.params["optim.lr"] == "0.0003"
    assert len(run.data.params["long"]) == 6000 and "truncated 7000 chars" in run.data.params["long"]
    loss = _history(client, tracker.run_id, "loss")
    assert loss[:-1] == [(step, 10.0 / (step + 1)) for step in range(0, 30, 3)]
    assert loss[-1][0] == 31 and math.isnan(loss[-1][1])
    assert _history(client, tracker.run_id, "lr") == [(step, step * 1e-5) for step in range(0, 30, 3)]
    assert client.get_experiment(run.info.experiment_id).artifact_location == "mlflow-artifacts:/roundtrip"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/roundtrip/")
    listed = {f.path for f in client.list_artifacts(tracker.run_id)}
    assert listed == {"docs", "config", "plots"}
    local = Path(client.download_artifacts(tracker.run_id, "docs/notes.txt", str(tmp_path / "dl")))
    assert local.read_text() == "hello"
    # Proxied artifacts land in <home>/mlartifacts/<experiment>/<run id>/artifacts.
    assert list(store.artifacts_dir.glob(f"roundtrip/{tracker.run_id}/artifacts/plots/loss.png"))
    parent.close()


def test_resume_continues_without_duplicated_steps(server_uri):
    client = MlflowClient(server_uri)
    first = MlflowTracker.create(server_uri, "resume")
    assert first.last_steps() == {} and first.last_step() is None
    first.log_params({"seed": 1})

    def train(tracker: MlflowTracker, steps: range, already: dict[str, int]) -> None:
        # Like trainer.trial_callback.TrialReporter.record: skip (key, step) pairs already logged.
        for step in steps:
            metrics = {"loss": float(step)}
            if step % 4 == 0:
                metrics["val_loss"] = step / 10
            fresh = {k: v for k, v in metrics.items() if step > already.get(k, -1)}
            if fresh:
                tracker.log_metrics(fresh, step)

    train(first, range(10), {})
    first.close()  # the process "dies" with no terminal status
    client.set_terminated(first.run_id, "FAILED")

    resumed = MlflowTracker.resume(server_uri, first.run_id)
    run = client.get_run(first.run_id)
    assert run.info.status == "RUNNING" and run.data.tags[STATUS_TAG] == "running"
    already = resumed.last_steps()
    assert already == {"loss": 9, "val_loss": 8} and resumed.last_step() == 9
    resumed.log_params({"seed": 1})  # same value after resume: accepted
    train(resumed, range(6, 20), already)  # replays from an older checkpoint (step 6)
    resumed.set_status("finished")
    assert [s for s, _ in _history(client, first.run_id, "loss")] == list(range(20))
    assert _history(client, first.run_id, "val_loss") == [(step, step / 10) for step in range(0, 20, 4)]
    assert client.get_run(first.run_id).info.status == "FINISHED"


def test_params_same_value_ok_different_value_raises(server_uri):
    tracker = MlflowTracker.create(server_uri, "params")
    tracker.log_params({"lr": 0.001, "gate": "sigmoid"})
    tracker.log_params({"lr": 0.001})
    with pytest.raises(ParamConflictError, match="'lr'.*already '0.001'"):
        tracker.log_params({"lr": 0.002})
    # A fresh tracker on the same run knows the stored params too.
    reopened = MlflowTracker.resume(server_uri, tracker.run_id)
    reopened.log_params({"gate": "sigmoid", "new": 1})
    with pytest.raises(ParamConflictError):
        reopened.log_params({"gate": "silu"})
    params = MlflowClient(server_uri).get_run(tracker.run_id).data.params
    assert params == {"lr": "0.001", "gate": "sigmoid", "new": "1"}
    tracker.close()
    reopened.close()


@pytest.mark.parametrize(
    ("status", "mlflow_status"),
    [("finished", "FINISHED"), ("diverged", "FINISHED"), ("failed", "FAILED"), ("killed", "KILLED")],
)
def test_terminal_status_ends_the_run(server_uri, status, mlflow_status):
    tracker = MlflowTracker.create(server_uri, "status")
    tracker.log_metrics({"loss": 1.0}, step=0)
    tracker.set_status(status)
    run = MlflowClient(server_uri).get_run(tracker.run_id)
    assert run.info.status == mlflow_status and run.info.end_time is not None
    assert run.data.tags[STATUS_TAG] == status
    assert run.data.metrics == {"loss": 1.0}  # flushed before ending
    with pytest.raises(RuntimeError, match="closed"):
        tracker.log_metrics({"loss": 2.0}, step=1)


def test_unknown_status_is_rejected(server_uri):
    tracker = MlflowTracker.create(server_uri, "status")
    with pytest.raises(ValueError, match="unknown gatelab status 'done'"):
        tracker.set_status("done")
    tracker.close()


def test_last_steps_are_the_largest_steps_not_the_latest_logged(server_uri):
    tracker = MlflowTracker.create(server_uri, "laststep", asynchronous=False)
    tracker.log_metrics({"a": 1.0}, step=5)
    tracker.log_metrics({"b": 1.0}, step=7)
    tracker.log_metrics({"a": 2.0}, step=3)
    assert tracker.last_steps() == {"a": 5, "b": 7}  # includes what was still buffered
    assert tracker.last_step() == 7
    tracker.close()


def test_large_flush_respects_batch_limits(server_uri):
    client = MlflowClient(server_uri)
    tracker = MlflowTracker.create(server_uri, "batch", flush_every=10**6, flush_interval_s=3600)
    tracker.log_params({f"p{i}": i for i in range(250)})  # > 100 params per batch
    keys = [f"m{i}" for i in range(20)]
    for step in range(125):  # 2500 metrics > 1000 per batch
        tracker.log_metrics({key: step + i / 100 for i, key in enumerate(keys)}, step=step)
    assert client.get_run(tracker.run_id).data.metrics == {}  # still buffered
    tracker.flush()
    run = client.get_run(tracker.run_id)
    assert len(run.data.params) == 250 and len(run.data.metrics) == 20
    assert _history(client, tracker.run_id, "m7") == [(step, step + 0.07) for step in range(125)]
    tracker.close()


def test_mlflow_tracker_matches_the_tracker_protocol():
    for name in ("log_params", "set_tags", "log_metrics", "log_artifact", "last_steps", "set_status", "flush"):
        expected = list(inspect.signature(getattr(Tracker, name)).parameters)
        assert list(inspect.signature(getattr(MlflowTracker, name)).parameters) == expected, name


def test_merged_keeps_each_call_in_one_batch():
    def call(n: int, step: int) -> dict:
        return batch_op(metrics=[(f"k{i}", 0.0, 0, step) for i in range(n)])

    big = [(f"k{i}", 0.0, 0, 3) for i in range(2100)]  # the tracker cuts a call over 1000 into 1000s
    ops = [call(400, 0), call(400, 1), call(400, 2), *(batch_op(metrics=big[i : i + 1000]) for i in (0, 1000, 2000))]
    batches = [request["metrics"] for request, _ in merged(ops)]
    assert [len(b) for b in batches] == [800, 400, 1000, 1000, 100]
    assert {m[3] for m in batches[0]} == {0, 1} and {m[3] for m in batches[1]} == {2}
    assert [count for _, count in merged(ops)] == [2, 1, 1, 1, 1]


def test_background_sender_flushes_on_its_own(server_uri):
    tracker = MlflowTracker.create(server_uri, "async", flush_every=5, flush_interval_s=0.2)
    for step in range(5):
        tracker.log_metrics({"loss": float(step)}, step=step)
    client = MlflowClient(server_uri)
    for _ in range(100):
        if len(client.get_metric_history(tracker.run_id, "loss")) == 5:
            break
        threading.Event().wait(0.05)
    assert len(client.get_metric_history(tracker.run_id, "loss")) == 5  # sent without flush()
    tracker.close()


def test_experiment_created_concurrently_by_another_process_is_reused(server_uri):
    class LateClient(MlflowClient):
        """Sees no experiment on its first look, as if another process created it right after."""

        looks = 0

        def get_experiment_by_name(self, name):
            self.looks += 1
            return None if self.looks == 1 else super().get_experiment_by_name(name)

    other_id = MlflowClient(server_uri).create_experiment("race", artifact_location="mlflow-artifacts:/race")
    late = LateClient(server_uri)
    assert get_or_create_experiment(late, "race") == other_id
    assert late.looks == 2


def test_sqlite_and_server_see_the_same_experiment(server_uri, store, tmp_path):
    # Created directly against SQLite (metadata only), then continued through the server with an artifact.
    direct = MlflowTracker.create(store.tracking_uri, "interop", asynchronous=False)
    direct.log_metrics({"loss": 1.5}, step=0)
    with pytest.raises(RuntimeError, match="behind the MLflow server"):
        direct.log_text("x", "x.txt")
    direct.close()
    via_server = MlflowTracker.resume(server_uri, direct.run_id)
    via_server.log_text("ok", "notes/x.txt")
    via_server.log_metrics({"loss": 1.0}, step=1)
    via_server.set_status("finished")
    server_client, sqlite_client = MlflowClient(server_uri), MlflowClient(store.tracking_uri)
    assert _history(server_client, direct.run_id, "loss") == [(0, 1.5), (1, 1.0)]
    assert [f.path for f in server_client.list_artifacts(direct.run_id, "notes")] == ["notes/x.txt"]
    # Created through the server, read directly from SQLite.
    other = MlflowTracker.create(server_uri, "interop")
    other.log_metrics({"loss": 2.0}, step=4)
    other.set_status("diverged")
    run = sqlite_client.get_run(other.run_id)
    assert run.info.experiment_id == sqlite_client.get_run(direct.run_id).info.experiment_id
    assert run.data.metrics == {"loss": 2.0} and run.data.tags[STATUS_TAG] == "diverged"


def test_concurrent_trials_share_one_server(server_uri, store):
    errors: list[BaseException] = []
    run_ids: list[str] = []

    def trial(index: int) -> None:
        try:
            tracker = MlflowTracker.create(server_uri, "concurrent", run_name=f"t{index}", flush_every=10)
            tracker.log_params({"index": index, "lr": 1e-3})
            for step in range(40):
                tracker.log_metrics({"loss": index + step / 100, "grad_norm": 1.0, "lr": 1e-3}, step=step)
                if step % 10 == 0:
                    tracker.set_tags({"progress": str(step)})
            tracker.log_text(f"trial {index}", "summary.txt")
            tracker.set_status("finished")
            run_ids.append(tracker.run_id)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=trial, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    client = MlflowClient(server_uri)
    assert len(run_ids) == 8
    experiments = {client.get_run(run_id).info.experiment_id for run_id in run_ids}
    assert len(experiments) == 1  # the creation race produced one experiment
    for run_id in run_ids:
        assert [s for s, _ in _history(client, run_id, "loss")] == list(range(40))
        assert client.get_run(run_id).info.status == "FINISHED"
    assert "database is locked" not in store.server_log_path.read_text()


# -- server -------------------------------------------------------------------------------------------------


def test_server_is_reused_within_and_across_processes(server_uri, store):
    info, started = ensure_server(store)
    assert not started and info.uri == server_uri
    state = json.loads(store.server_state_path.read_text())
    assert state == {"pid": info.pid, "port": info.port, "uri": server_uri}
    with local_server(store) as again:
        assert again == server_uri
    assert is_healthy(server_uri)  # the inner context did not stop a server it did not start
    code = (
        "import json, sys; from tracking import Store, ensure_server; "
        "info, started = ensure_server(Store(sys.argv[1])); print(json.dumps([info.pid, info.port, started]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(store.home)], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [info.pid, info.port, False]


def test_ui_reports_a_running_server_instead_of_starting_another(server_uri, store, capsys):
    assert ui(store, port=free_port_for_test()) == 0
    assert f"already running at {server_uri}" in capsys.readouterr().out


def test_ui_serves_in_the_foreground_until_ctrl_c(tmp_path):
    home, port = tmp_path / "ui-home", free_port_for_test()
    code = "import sys; from tracking import Store, ui; sys.exit(ui(Store(sys.argv[1]), int(sys.argv[2])))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(home), str(port)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while running_server(Store(home)) is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        info = running_server(Store(home))  # recorded, so trials started meanwhile log through it
        assert info is not None and info.uri == uri
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert f"MLflow UI at {uri}" in out
    assert not is_healthy(uri) and not server_module._group_alive(info.pid)
    assert not Store(home).server_state_path.exists()


def free_port_for_test() -> int:
    return server_module.free_port()


def test_stale_state_file_is_ignored(tmp_path):
    store = Store(tmp_path / "home").ensure()
    store.server_state_path.write_text(json.dumps({"pid": 2**22 + 7, "port": 1, "uri": "http://127.0.0.1:1"}))
    assert running_server(store) is None


def test_server_that_exits_early_reports_its_log(tmp_path):
    log = tmp_path / "server.log"
    log.write_text("boom: address already in use\n")
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(ServerStartError, match=r"(?s)exited with code 3.*address already in use"):
        server_module._wait_healthy(proc, "http://127.0.0.1:1", 30, log, 0)


def test_server_that_never_answers_times_out(tmp_path):
    log = tmp_path / "server.log"
    log.write_text("")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with pytest.raises(ServerStartError, match=r"did not answer /health within 1 s"):
            server_module._wait_healthy(proc, "http://127.0.0.1:1", 1.0, log, 0)
    finally:
        proc.kill()
        proc.wait()


def test_a_recorded_failure_is_shown_until_the_trial_is_retried(server_uri):
    from gatelab.tracking.runs.ledger import TrialRun, open_trial_run, record_failure, trial_records
    from gatelab.trainer.config.run_tags import ERROR_TAG

    k7 = TrialRun(uri=server_uri, experiment="ledger-failures", key="k7", run_name="baseline [k7]")
    assert record_failure(replace(k7, tags={"variant": "baseline"}), "out_of_memory: CUDA out of memory")
    record = trial_records(server_uri, "ledger-failures")["k7"]
    assert (record.status, record.error, record.attempt) == ("failed", "out_of_memory: CUDA out of memory", 1)
    tracker, existing = open_trial_run(k7)
    tracker.close()
    assert existing.run_id == tracker.run_id  # the retry continues the failed run ...
    record = trial_records(server_uri, "ledger-failures")["k7"]
    assert (record.status, record.error, record.attempt) == ("running", None, 2)  # ... without the old reason
    assert ERROR_TAG not in MlflowClient(server_uri).get_run(tracker.run_id).data.tags


def test_a_trial_run_gets_its_params_at_creation_and_a_resume_keeps_them(server_uri):
    from gatelab.tracking.runs.ledger import TrialRun, open_trial_run
    from gatelab.trainer.config.trial import TrialConfig, run_params

    params = run_params(TrialConfig(variant="g1_headwise_sigmoid", seed=3))
    assert {"gate_position": "g1", "gate_granularity": "headwise", "optim.lr": 3e-3, "seed": 3}.items() <= (
        params.items()
    )
    expected = {key: str(value) for key, value in params.items()}
    client = MlflowClient(server_uri)
    p1 = TrialRun(uri=server_uri, experiment="ledger-params", key="p1", run_name="g1 [p1]")
    p2 = TrialRun(uri=server_uri, experiment="ledger-params", key="p2", run_name="g1 [p2]")
    tracker, existing = open_trial_run(replace(p1, params=params))
    tracker.close()
    assert existing is None and client.get_run(tracker.run_id).data.params == expected  # before any training
    # A resume (the same run reopened, as after a crash) logs the same params again: accepted, unchanged.
    resumed, existing = open_trial_run(replace(p1, params=params))
    resumed.close()
    assert existing.run_id == resumed.run_id == tracker.run_id and existing.attempt == 1
    assert client.get_run(tracker.run_id).data.params == expected
    # A different value for the same run is refused: params are immutable, and the trial key fixes these.
    with pytest.raises(ParamConflictError, match="gate_granularity"):
        open_trial_run(replace(p1, params={**params, "gate_granularity": "elementwise"}))
    # A run whose creator died before logging them (or an older gatelab) gets them on its next attempt.
    bare, _ = open_trial_run(p2)
    bare.close()
    assert client.get_run(bare.run_id).data.params == {}
    filled, _ = open_trial_run(replace(p2, params=params))
    filled.close()
    assert filled.run_id == bare.run_id and client.get_run(bare.run_id).data.params == expected
