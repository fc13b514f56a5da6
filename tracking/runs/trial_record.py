"""What the ledger knows of one trial, built from a run's tags, metrics and params: the same record whether the run
was read through MLflow's client (tracking/runs/ledger.py) or straight from its database
(tracking/runs/ledger_database.py). No MLflow here, so a command that only reads the ledger need not import it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from gatelab.trainer.config.outcome import ENDED_STATUSES, Status
from gatelab.trainer.config.run_tags import ATTEMPT_TAG, ERROR_TAG, GATE_HIST_TAG, STATUS_TAG

# The tags a record reads: a reader that selects tags fetches these and KEY_TAG/KIND_TAG (how runs are found).
RECORD_TAGS = (STATUS_TAG, ATTEMPT_TAG, ERROR_TAG, GATE_HIST_TAG)


@dataclass(frozen=True)
class TrialRecord:
    """What the ledger knows of one trial."""

    run_id: str
    """The trial's MLflow child run."""
    status: str
    """gatelab.status: running, finished, diverged, failed, killed."""
    metrics: dict
    """Latest value of every metric."""
    params: dict
    """Logged params (strings)."""
    start_time_ms: int
    """When the run was created."""
    end_time_ms: int | None
    """When it ended, if it did."""
    attempt: int
    """How many times a process has started the trial (gatelab.attempt)."""
    error: str | None = None
    """Why a failed trial failed (ERROR_TAG), e.g. "out_of_memory: CUDA out of memory. ..."."""
    gate_hist: tuple[int, ...] | None = None
    """A gated trial's gate-score histogram counts (GATE_HIST_TAG), when its run carries them."""


def trial_record(
    run_id: str,
    tags: Mapping[str, str],
    metrics: Mapping[str, float],
    params: Mapping[str, str],
    start_time_ms: int,
    end_time_ms: int | None,
) -> TrialRecord:
    return TrialRecord(
        run_id,
        tags.get(STATUS_TAG, Status.RUNNING.value),
        dict(metrics),
        dict(params),
        start_time_ms,
        end_time_ms,
        int(tags.get(ATTEMPT_TAG, "1")),
        tags.get(ERROR_TAG),
        tuple(json.loads(tags[GATE_HIST_TAG])) if GATE_HIST_TAG in tags else None,
    )


def grid_end(statuses: Mapping[str, str]) -> tuple[str, str] | None:
    """How a grid's parent run ends once every trial has ended: (MLflow run status, SUMMARY_TAG's value), FAILED if
    any trial failed; None while a trial has not ended (the grid stays RUNNING for the next resume)."""
    if not statuses or any(s not in ENDED_STATUSES for s in statuses.values()):
        return None
    failed = sum(s == Status.FAILED for s in statuses.values())
    return ("FAILED" if failed else "FINISHED"), f"{len(statuses) - failed} done, {failed} failed"
