"""Sending what trials kept on disk while the tracking server was away (their journals, tracking/runs/outbox.py).

A trial that ended, or whose worker was killed, while the server was away leaves its journal in the trial's folder
(trainer/config/trial_folder.py). The next process that opens the trial sends it before anything else
(`ledger.open_trial_run`), and `gatelab submit|resume|status` and a driver whose server came back send every journal
no live process holds, so the ledger catches up without the user doing anything."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities.lifecycle_stage import LifecycleStage
from mlflow.exceptions import MlflowException

from gatelab.tracking.runs.file_lock import file_lock
from gatelab.tracking.runs.outbox import merged, read_journal
from gatelab.tracking.runs.run_writer import RunWriter, ServerAway
from gatelab.tracking.server.process import is_healthy
from gatelab.trainer.config.trial_folder import TrialFolder, journals

RETRY_S = 2.0


def send_journal(uri: str, journal: Path, *, wait_s: float = 0.0) -> bool:
    """Send `journal`'s operations in order and remove it; True when sent. Waits up to `wait_s` for an absent
    server (False when it stays away; the journal is kept). A journal of a deleted run is set aside."""
    run_id, ops = read_journal(journal)
    client = MlflowClient(tracking_uri=uri)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            artifact_uri = _artifact_uri(client, run_id, journal)
            if artifact_uri is None:
                return True
            writer = RunWriter(client, run_id, artifact_uri)
            for request, _ in merged(ops):
                writer.send(request)
            journal.unlink(missing_ok=True)
            return True
        except ServerAway:
            if time.monotonic() >= deadline:
                return False
            time.sleep(RETRY_S)


def catch_up(uri: str, checkpoint_root: Path | str) -> int:
    """Send the journal of every trial under `checkpoint_root` that no process holds (a running trial sends its
    own); returns how many were sent."""
    return sum(catch_up_trial(uri, journal.parent) for journal in journals(checkpoint_root))


def catch_up_trial(uri: str, trial_dir: Path) -> bool:
    """Send trial_dir's journal unless a process holds the trial (it sends its own); True when sent."""
    journal = TrialFolder(trial_dir).journal
    if not journal.exists():
        return False
    with file_lock(TrialFolder(trial_dir).lock, blocking=False) as acquired:
        return bool(acquired and journal.exists() and send_journal(uri, journal))


def _artifact_uri(client: MlflowClient, run_id: str, journal: Path) -> str | None:
    """The run's artifact location; None (and the journal renamed aside) when the run is gone or deleted."""
    uri = client.tracking_uri
    if uri.startswith(("http://", "https://")) and not is_healthy(uri):  # not the client's minutes of retries
        raise ServerAway(f"{uri} does not answer /health")
    try:
        run = client.get_run(run_id)
    except MlflowException as error:
        if "RESOURCE_DOES_NOT_EXIST" not in str(error.error_code):
            raise ServerAway(str(error)) from error
        run = None
    if run is None or run.info.lifecycle_stage == LifecycleStage.DELETED:
        kept = journal.rename(journal.with_name(journal.name + ".orphaned"))
        print(f"gatelab: warning: run {run_id} is gone; its unsent operations are kept in {kept}", file=sys.stderr)
        return None
    return run.info.artifact_uri
