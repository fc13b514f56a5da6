"""MLflow as the grid's ledger: one experiment per grid, one parent run per grid, one child run per trial.

Everything a driver or a worker needs to decide what to do lives in run tags: `gatelab.kind` (grid|trial),
`gatelab.grid`, `trial_key`, `gatelab.status`, `gatelab.attempt`. A process may die at any moment; the next
one reads these tags and knows which trials are finished, which to resume and which to start.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from gatelab.tracking.runs.catch_up import send_journal
from gatelab.tracking.runs.file_lock import file_lock
from gatelab.tracking.runs.in_flight import InFlight, settle
from gatelab.tracking.runs.mlflow_tracker import MlflowTracker, get_or_create_experiment
from gatelab.tracking.runs.trial_record import TrialRecord, grid_end, trial_record
from gatelab.trainer.config.outcome import DONE_STATUSES
from gatelab.trainer.config.run_tags import (
    ATTEMPT_TAG,
    ERROR_TAG,
    GRID_TAG,
    KEY_TAG,
    KIND_TAG,
    OPENED_BY_TAG,
    SUMMARY_TAG,
)
from gatelab.trainer.config.trial_folder import TrialFolder

JOURNAL_WAIT_S = 600.0  # a trial opened while the server is away waits this long for it, then fails to start


def _record(run) -> TrialRecord:
    return trial_record(
        run.info.run_id, run.data.tags, run.data.metrics, run.data.params, run.info.start_time, run.info.end_time
    )


def ensure_parent_run(uri: str, experiment: str, grid_name: str, tags: dict[str, str], lock_dir: Path) -> str:
    """The grid's parent run id, created once even when two submits race (serialised by a file lock)."""
    client = MlflowClient(tracking_uri=uri)
    with file_lock(Path(lock_dir) / f"grid-{grid_name}.lock"):
        experiment_id = get_or_create_experiment(client, experiment)
        found = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{KIND_TAG}` = 'grid' and tags.`{GRID_TAG}` = '{grid_name}'",
            max_results=1,
        )
        if found:
            run_id = found[0].info.run_id
        else:
            run_id = client.create_run(
                experiment_id, run_name=f"grid {grid_name}", tags={KIND_TAG: "grid", GRID_TAG: grid_name}
            ).info.run_id
    for key, value in tags.items():  # mutable facts (file hash, git SHA) follow the latest submit
        client.set_tag(run_id, key, value)
    client.update_run(run_id, status="RUNNING")  # a resumed grid is running again
    return run_id


def close_parent_run(uri: str, run_id: str, statuses: dict[str, str]) -> None:
    """End the grid's parent run once every trial has a result: FINISHED, or FAILED if any trial failed.
    A grid with trials still unfinished (interrupted, run elsewhere) stays RUNNING for the next resume."""
    end = grid_end(statuses)
    if end is None:
        return
    client = MlflowClient(tracking_uri=uri)
    client.set_tag(run_id, SUMMARY_TAG, end[1])
    client.set_terminated(run_id, status=end[0])


def trial_records(uri: str, experiment: str) -> dict[str, TrialRecord]:
    """Every trial child run of the experiment, by trial key (the newest run when there are several)."""
    return {key: runs[-1] for key, runs in trial_runs_by_key(uri, experiment).items()}


def trial_runs_by_key(uri: str, experiment: str) -> dict[str, list[TrialRecord]]:
    """Every trial child run of the experiment, by trial key, oldest first: one per key unless a trial's run was
    duplicated (what the chaos soak checks never happens)."""
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return {}
    records: dict[str, list[TrialRecord]] = {}
    page_token = None
    while True:
        page = client.search_runs(
            [exp.experiment_id],
            filter_string=f"tags.`{KIND_TAG}` = 'trial'",
            order_by=["attributes.start_time ASC"],
            max_results=1000,
            page_token=page_token,
        )
        for run in page:
            key = run.data.tags.get(KEY_TAG)
            if key:
                records.setdefault(key, []).append(_record(run))
        page_token = page.token
        if not page_token:
            return records


@dataclass(frozen=True, kw_only=True)
class TrialRun:
    """A trial's identity in the ledger: where its run lives, how it is found, and what a new run is made with."""

    uri: str
    """The tracking server's URI."""
    experiment: str
    """The grid's experiment."""
    key: str
    """The trial key (KEY_TAG): how its run is found."""
    run_name: str
    """A new run's name."""
    parent_run_id: str | None = None
    """The grid's parent run, a new run's parent; None for a trial run on its own (`gatelab train`)."""
    tags: Mapping[str, str] = field(default_factory=dict)
    """A new run's tags (beside the ledger's own)."""
    params: Mapping[str, Any] = field(default_factory=dict)
    """Facts the trial key fixes, such as the gate axes: logged when the run is made, and again on resume."""


def open_trial_run(trial: TrialRun, journal: Path | None = None) -> tuple[MlflowTracker | None, TrialRecord | None]:
    """The trial's tracker: its existing run reopened (resume) or a new run (a child of the parent run when
    given); (None, record) when the trial is already done. The trial's params are logged when the run is
    created, and again on resume, where an identical value is skipped:
    that fills in a run whose creator died before logging them. Call it only while holding the trial's lock
    (or from the single process that owns it), so two processes never create two runs for one key.
    `journal`: the trial's file of operations kept while the server was away (tracking/runs/outbox.py); what an
    earlier process left there is sent first (it may say the trial is done), and the tracker keeps its own there."""
    client = MlflowClient(tracking_uri=trial.uri)
    in_flight = InFlight(TrialFolder(journal.parent).in_flight if journal is not None else None)
    if in_flight.path is not None and in_flight.path.exists():  # an earlier attempt died mid-request:
        experiment_id = get_or_create_experiment(client, trial.experiment)  # what it sent lands before any read
        settle(in_flight.path, lambda note: _landed(client, experiment_id, note))
    if journal is not None and journal.exists():
        send_journal(trial.uri, journal, wait_s=JOURNAL_WAIT_S)
    experiment_id = get_or_create_experiment(client, trial.experiment)
    existing = _newest_trial_run(client, experiment_id, trial.key)
    if existing is not None and existing.status in DONE_STATUSES:
        return None, existing
    if existing is None:
        return _new_trial_run(trial, experiment_id, journal, in_flight), None
    tracker = MlflowTracker.resume(trial.uri, existing.run_id, journal=journal, in_flight=in_flight)
    try:
        tracker.log_params(trial.params)
    except BaseException:  # a conflicting value: the run is not this trial's; stop the tracker's sender
        tracker.close()
        raise
    tracker.set_tags({ATTEMPT_TAG: str(existing.attempt + 1)})
    if existing.error is not None:  # the failure is being retried: its reason no longer describes the run
        client.delete_tag(existing.run_id, ERROR_TAG)
    return tracker, existing


def record_failure(trial: TrialRun, error: str) -> bool:
    """Mark a trial failed whose worker could not say so itself (killed for memory, or lost with its retry budget
    spent): its newest run, or a new child run when the worker died before opening one, gets status `failed`
    and ERROR_TAG. Call it only while holding the trial's lock. False (nothing written) if it is done."""
    client = MlflowClient(tracking_uri=trial.uri)
    experiment_id = get_or_create_experiment(client, trial.experiment)
    existing = _newest_trial_run(client, experiment_id, trial.key)
    if existing is not None and existing.status in DONE_STATUSES:
        return False
    tracker = (
        MlflowTracker.resume(trial.uri, existing.run_id)
        if existing is not None
        else _new_trial_run(trial, experiment_id)
    )
    try:
        tracker.log_params(trial.params)  # a reopened run whose creator died before logging them
        tracker.fail(error)
    finally:
        tracker.close()
    return True


def _new_trial_run(
    trial: TrialRun, experiment_id: str, journal: Path | None = None, in_flight: InFlight | None = None
) -> MlflowTracker:
    in_flight = in_flight or InFlight(None)
    opened_by = uuid.uuid4().hex
    with in_flight.creating(opened_by):
        return MlflowTracker.create(
            trial.uri,
            trial.experiment,
            run_name=trial.run_name,
            parent_run_id=trial.parent_run_id,
            experiment_id=experiment_id,
            tags={KIND_TAG: "trial", KEY_TAG: trial.key, ATTEMPT_TAG: "1", OPENED_BY_TAG: opened_by, **trial.tags},
            params=dict(trial.params),
            journal=journal,
            in_flight=in_flight,
        )


def _landed(client: MlflowClient, experiment_id: str, note: Mapping) -> bool:
    """Whether the request an in-flight note names is in the ledger (tracking/runs/in_flight.py); False while the
    server cannot say (settle then keeps waiting, up to its bound)."""
    try:
        return _found(client, experiment_id, note)
    except MlflowException:
        return False


def _found(client: MlflowClient, experiment_id: str, note: Mapping) -> bool:
    if "create" in note:
        found = client.search_runs(
            [experiment_id], filter_string=f"tags.`{OPENED_BY_TAG}` = '{note['create']}'", max_results=1
        )
        return bool(found)
    latest = {metric.key: metric.step for metric in client.get_run(note["run_id"]).data.to_proto().metrics}
    return all(latest.get(key, -1) >= step for key, step in note["steps"].items())


def trial_records_for_key(uri: str, experiment: str, key: str) -> TrialRecord | None:
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    return None if exp is None else _newest_trial_run(client, exp.experiment_id, key)


def _newest_trial_run(client: MlflowClient, experiment_id: str, key: str) -> TrialRecord | None:
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{KIND_TAG}` = 'trial' and tags.`{KEY_TAG}` = '{key}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return _record(runs[0]) if runs else None
