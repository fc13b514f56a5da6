"""A resubmit with nothing to do, known from the ledger's database alone: every trial done (or failed, for a
`submit`), and the grid's parent run already ended as the driver would end it, with the tags it would set. Then
`gatelab submit` says so without importing MLflow or Ray or starting the home's server (docs/benchmarks.md: a
no-op resubmit of 1,000 trials took 5.4 s through the full path, mostly MLflow's import and search)."""

from __future__ import annotations

from gatelab.grid.dispatch.ray_jobs import experiment_name, parent_tags
from gatelab.grid.spec.expand import Trial
from gatelab.grid.spec.grid_spec import GridSpec
from gatelab.tracking.store import Store
from gatelab.trainer.config.outcome import DONE_STATUSES, Status
from gatelab.trainer.config.run_tags import SUMMARY_TAG, TRIALS_TAG
from gatelab.trainer.config.trial_folder import journals


def kept_statuses(retry_failed: bool) -> frozenset[str]:
    """The statuses a submit leaves alone: done ones, and failed ones unless it is a resume (`retry_failed`)."""
    return frozenset(DONE_STATUSES) | (frozenset() if retry_failed else {Status.FAILED})


def settled_statuses(spec: GridSpec, trials: list[Trial], store: Store, *, retry_failed: bool) -> dict[str, str] | None:
    """Each trial's stored status when a submit of `trials` would run and change nothing; None when it might (the
    full path then decides). Only a plain grid on the home's own database: a search or adaptive-seeds grid decides
    what to run from more than statuses, and another server is read through MLflow."""
    from gatelab.tracking.runs.ledger_database import grid_run_from_database, trial_records_from_database
    from gatelab.tracking.runs.trial_record import grid_end

    if spec.search is not None or spec.seeds is not None or spec.tracking.uri is not None:
        return None
    if not store.has_ledger or journals(spec.storage.root(store.checkpoints_dir)):
        return None  # nothing stored yet, or results on disk still to send
    experiment = experiment_name(spec)
    records = trial_records_from_database(store.tracking_uri, experiment)
    kept = kept_statuses(retry_failed)
    statuses = {}
    for trial in trials:
        record = records.get(trial.key)
        if record is None or record.status not in kept:
            return None
        statuses[trial.key] = record.status
    end = grid_end(statuses)
    parent = grid_run_from_database(store.tracking_uri, experiment, spec.name)
    if end is None or parent is None:
        return None
    parent_status, tags = parent
    wanted = {**parent_tags(spec, **{TRIALS_TAG: str(len(trials))}), SUMMARY_TAG: end[1]}
    if parent_status != end[0] or any(tags.get(key) != value for key, value in wanted.items()):
        return None  # e.g. an edited grid file (its hash) or new code (its git SHA): the full path records them
    return statuses
