"""A request a dead trial process left at the server lands before its next attempt reads the ledger
(tracking/runs/in_flight.py): no second run for the trial, no step logged twice."""

import json
import threading
import time

import pytest
from mlflow import MlflowClient

from gatelab.tracking.runs import in_flight
from gatelab.tracking.runs.in_flight import InFlight, settle
from gatelab.tracking.runs.ledger import TrialRun, open_trial_run, trial_runs_by_key
from gatelab.trainer.config.run_tags import KEY_TAG, KIND_TAG, OPENED_BY_TAG
from gatelab.trainer.config.trial_folder import TrialFolder


def test_the_note_names_the_request_while_it_is_out_and_stays_if_no_answer_came(tmp_path):
    note = tmp_path / "note.json"
    flight = InFlight(note)
    with flight.sending("run1", [("loss", 2.0, 0, 10), ("loss", 1.9, 0, 20), ("lr", 0.1, 0, 20)]):
        assert json.loads(note.read_text()) == {"run_id": "run1", "steps": {"loss": 20, "lr": 20}}
    assert not note.exists()
    with flight.sending("run1", []):  # tags or params only: they land the same whenever they land
        assert not note.exists()
    with pytest.raises(TimeoutError), flight.creating("abc"):
        raise TimeoutError  # no answer: the run may still be made
    assert json.loads(note.read_text()) == {"create": "abc"}


def test_settle_waits_until_the_request_landed_or_its_bound(tmp_path):
    note = tmp_path / "note.json"
    assert settle(note, lambda n: pytest.fail("no note: nothing to wait for")) == 0.0
    now = [0.0]

    def sleep(s):
        now[0] += s

    answers = iter([False, False, True])
    note.write_text(json.dumps({"create": "abc"}))
    assert settle(note, lambda n: next(answers), sleep=sleep, clock=lambda: now[0]) == 2 * in_flight.SETTLE_POLL_S
    assert not note.exists()
    note.write_text(json.dumps({"create": "abc"}))
    assert settle(note, lambda n: False, sleep=sleep, clock=lambda: now[0]) >= in_flight.SETTLE_MAX_S  # lost: go on


def _later(seconds, action):
    thread = threading.Thread(target=lambda: (time.sleep(seconds), action()))
    thread.start()
    return thread


@pytest.mark.mlflow
def test_a_run_whose_creation_lands_late_is_resumed_not_made_twice(served_store, tmp_path):
    _, uri = served_store
    folder = TrialFolder(tmp_path / "late-create")
    folder.path.mkdir()
    folder.in_flight.write_text(json.dumps({"create": "dead-process"}))  # it died with its create_run out
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment("late-create")
    made = {}
    tags = {KIND_TAG: "trial", KEY_TAG: "k1", OPENED_BY_TAG: "dead-process"}
    late = _later(1.5, lambda: made.setdefault("run", client.create_run(experiment_id, tags=tags)))
    trial = TrialRun(uri=uri, experiment="late-create", key="k1", run_name="k1")
    tracker, _ = open_trial_run(trial, journal=folder.journal)
    late.join()
    tracker.close()
    assert tracker.run_id == made["run"].info.run_id
    assert len(trial_runs_by_key(uri, "late-create")["k1"]) == 1


@pytest.mark.mlflow
def test_steps_that_land_late_are_not_logged_again(served_store, tmp_path):
    _, uri = served_store
    first, _ = open_trial_run(TrialRun(uri=uri, experiment="late-steps", key="k2", run_name="k2"))
    first.log_metrics({"loss": 2.0}, 10)
    first.close()
    folder = TrialFolder(tmp_path / "late-steps")
    folder.path.mkdir()
    folder.in_flight.write_text(json.dumps({"run_id": first.run_id, "steps": {"loss": 20}}))
    client = MlflowClient(tracking_uri=uri)
    late = _later(1.5, lambda: client.log_metric(first.run_id, "loss", 1.5, step=20))
    trial = TrialRun(uri=uri, experiment="late-steps", key="k2", run_name="k2")
    tracker, _ = open_trial_run(trial, journal=folder.journal)
    late.join()
    assert tracker.run_id == first.run_id and tracker.last_steps()["loss"] == 20  # the resumed trial starts after it
    tracker.close()
