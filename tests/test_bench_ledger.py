"""`gatelab bench ledger` (grid/bench/ledger.py): writer processes log through the real tracker to a real server,
and the check finds every point stored once; and the check itself finds a lost, a doubled and a wrong point and
a run that did not end finished, planted in a real store."""

import json
import time

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric

from gatelab.grid.bench.ledger import WriterResult, _check, logged_value, metric_name, violations
from gatelab.grid.cli.main import main
from gatelab.tracking.runs.mlflow_tracker import MlflowTracker

pytestmark = [pytest.mark.mlflow]


@pytest.mark.slow
def test_the_bench_checks_every_point_of_every_writer(capsys, tmp_path):
    load = ["--writers", "3", "--metrics", "20", "--rate", "5", "--seconds", "3"]
    assert main(["bench", "ledger", *load, "--json"]) == 0
    [result] = json.loads(capsys.readouterr().out)
    assert result["violations"] == [] and result["backend"] == "sqlite" and result["server_workers"] == 1
    assert result["steps_logged"] == result["steps_offered"] == 3 * 15
    assert result["points_stored"] == 3 * 20 * 15 and result["runs_not_finished"] == 0
    assert result["server_cores"] is not None and result["close_lag_s"]["max"] >= 0


def test_the_check_finds_lost_doubled_and_wrong_points_and_an_unfinished_run(served_store, tmp_path):
    _, uri = served_store
    tracker = MlflowTracker.create(uri, "ledger-check", asynchronous=False)
    for step in (1, 2, 4):  # step 3 lost
        tracker.log_metrics({metric_name(0): logged_value(0, step, 0)}, step)
    tracker.flush()
    now = int(time.time() * 1000)
    client = MlflowClient(tracking_uri=uri)
    client.log_batch(tracker.run_id, metrics=[Metric(metric_name(0), logged_value(0, 4, 0), now + 7, 4)])  # doubled
    client.log_batch(tracker.run_id, metrics=[Metric(metric_name(0), 99.0, now, 5)])  # a wrong value
    tracker.close()  # the run is left RUNNING: not finished
    (tmp_path / "writer-0.journal").write_text("[]")
    found = _check(uri, [WriterResult(0, tracker.run_id, 5, 0.1, time.time())], 1, tmp_path)
    assert (found["lost"], found["doubled"], found["wrong_values"], found["runs_not_finished"]) == (1, 1, 1, 1)
    assert found["journals_left"] == ["writer-0.journal"]
    lines = violations({**found, "errors": []})
    assert len(lines) == 5, lines
