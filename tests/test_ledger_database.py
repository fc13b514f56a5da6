"""The ledger read straight from MLflow's database (tracking/runs/ledger_database.py) against the same store read
through MLflow's client, and the no-op resubmit that needs nothing else (grid/dispatch/settled.py)."""

import json
import math
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from gatelab.grid.dispatch.ray_jobs import experiment_name, parent_tags
from gatelab.grid.dispatch.settled import settled_statuses
from gatelab.grid.spec.expand import expand
from gatelab.grid.spec.grid_file import load_grid
from gatelab.tracking.runs.ledger import (
    TrialRun,
    close_parent_run,
    ensure_parent_run,
    open_trial_run,
    trial_runs_by_key,
)
from gatelab.tracking.runs.ledger_database import grid_run_from_database, trial_runs_from_database
from gatelab.trainer.config.outcome import Status
from gatelab.trainer.config.run_tags import GATE_HIST_TAG, TRIALS_TAG
from gatelab.trainer.config.trial_folder import TrialFolder

from grid_helpers import write_grid

pytestmark = pytest.mark.mlflow


def _run(uri, experiment, key, parent=None):
    tracker, _ = open_trial_run(TrialRun(uri=uri, experiment=experiment, key=key, run_name=key, parent_run_id=parent))
    return tracker


def _comparable(runs: dict) -> dict:
    """NaN is not equal to itself: compare it as a string."""
    return {
        key: [{**vars(r), "metrics": {k: "nan" if math.isnan(v) else v for k, v in r.metrics.items()}} for r in found]
        for key, found in runs.items()
    }


def test_the_database_read_equals_mlflows_search_on_every_kind_of_run(served_store):
    store, uri = served_store
    experiment = "both-ways"
    parent = ensure_parent_run(uri, experiment, "both-ways", {}, store.locks_dir)
    done = _run(uri, experiment, "done", parent)
    done.log_metrics({"loss": 2.5, "step": 10.0}, 10)
    done.log_metrics({"loss": 2.0, "nan_metric": float("nan"), "inf_metric": float("inf")}, 20)
    done.set_tags({GATE_HIST_TAG: json.dumps([1, 2, 3])})
    done.log_params({"lr": "0.003"})
    done.set_status(Status.FINISHED)
    failed = _run(uri, experiment, "failed", parent)
    failed.fail("out_of_memory: CUDA out of memory")
    again = _run(uri, experiment, "failed", parent)  # reopened: the same run, attempt 2
    again.log_metrics({"loss": 3.0}, 5)
    again.close()
    running = _run(uri, experiment, "running", parent)
    running.close()
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.get_experiment_by_name(experiment).experiment_id
    duplicate = client.create_run(exp_id, tags={"gatelab.kind": "trial", "trial_key": "done"})  # a second run
    deleted = client.create_run(exp_id, tags={"gatelab.kind": "trial", "trial_key": "gone"})
    client.delete_run(deleted.info.run_id)
    other = _run(uri, "another-experiment", "elsewhere")
    other.close()

    through_mlflow = trial_runs_by_key(uri, experiment)
    from_database = trial_runs_from_database(store.tracking_uri, experiment)
    assert set(from_database) == {"done", "failed", "running"}  # no deleted run, no parent, no other experiment
    assert [r.run_id for r in from_database["done"]][-1] == duplicate.info.run_id  # the newest last
    assert from_database["failed"][-1].attempt == 2 and from_database["done"][0].gate_hist == (1, 2, 3)
    assert math.isnan(from_database["done"][0].metrics["nan_metric"])
    assert _comparable(from_database) == _comparable(through_mlflow)
    assert trial_runs_from_database(store.tracking_uri, "no-such-experiment") == {}

    status, tags = grid_run_from_database(store.tracking_uri, experiment, "both-ways")
    parent_run = client.get_run(parent)
    assert status == parent_run.info.status and tags == parent_run.data.tags


def _finish(uri, experiment, parent, trial, status=Status.FINISHED):
    tracker = _run(uri, experiment, trial.key, parent)
    tracker.log_metrics({"step": 4.0}, 4)
    if status == Status.FAILED:
        tracker.fail("boom")
    else:
        tracker.set_status(status)


def test_a_resubmit_with_nothing_to_do_is_known_from_the_database_alone(served_store, tmp_path):
    store, uri = served_store
    grid = write_grid(tmp_path / "settled.yaml", "settled", ["baseline", "g1_headwise_sigmoid"], max_steps=4)
    spec = load_grid(grid)
    trials = expand(spec)
    experiment = experiment_name(spec)
    parent = ensure_parent_run(
        uri, experiment, spec.name, parent_tags(spec, **{TRIALS_TAG: str(len(trials))}), store.locks_dir
    )
    assert settled_statuses(spec, trials, store, retry_failed=False) is None  # nothing run yet
    _finish(uri, experiment, parent, trials[0])
    _finish(uri, experiment, parent, trials[1], Status.FAILED)
    assert settled_statuses(spec, trials, store, retry_failed=False) is None  # the parent run is not closed yet
    close_parent_run(uri, parent, {trials[0].key: Status.FINISHED, trials[1].key: Status.FAILED})
    assert settled_statuses(spec, trials, store, retry_failed=False) == {
        trials[0].key: Status.FINISHED,
        trials[1].key: Status.FAILED,
    }
    assert settled_statuses(spec, trials, store, retry_failed=True) is None  # a resume reruns the failed one
    grid.write_text(grid.read_text() + "# edited\n")  # the same trials, another file hash to record
    assert settled_statuses(load_grid(grid), trials, store, retry_failed=False) is None
    grid.write_text(grid.read_text().removesuffix("# edited\n"))
    journal = TrialFolder.of(spec.storage.root(store.checkpoints_dir), trials[0].key).journal
    journal.parent.mkdir(parents=True)
    journal.write_text("")
    assert settled_statuses(spec, trials, store, retry_failed=False) is None  # results on disk still to send
    journal.unlink()

    # As a user runs it: no MLflow, no Ray, no server start; exit 1 because a trial failed, as the full path says.
    script = (
        "import sys; from gatelab.grid.cli.main import main; code = main(sys.argv[1:]); "
        "print('imported:', 'mlflow' in sys.modules, 'ray' in sys.modules); sys.exit(code)"
    )
    said = {}
    for command in ("submit", "status"):
        done = subprocess.run(
            [sys.executable, "-c", script, command, str(grid), "--home", str(store.home)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "imported: False False" in done.stdout, done.stdout + done.stderr
        said[command] = (done.returncode, done.stdout)
    assert said["submit"][0] == 1 and "0 to run" in said["submit"][1] and "1 done, 1 failed" in said["submit"][1]
    assert said["status"][0] == 0 and "2 trials: 1 failed, 1 finished" in said["status"][1]
