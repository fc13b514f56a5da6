"""A trial's status and result, defined once for the trainer, the workers, the drivers and the ledger.

Torch-free: the grid driver (which never imports torch) reads results, and DDP's rank 0 hands its result to
the Ray task through a JSON file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import Enum


class Status(str, Enum):
    """A trial's status, as its MLflow run's `gatelab.status` tag holds it (a plain string there)."""

    RUNNING = "running"
    """Started and not ended (or ended by a kill that left no word)."""
    FINISHED = "finished"
    """Trained to max_steps and evaluated."""
    DIVERGED = "diverged"
    """A result, not an error: the loss blew up (docs/design.md, divergence)."""
    FAILED = "failed"
    """An error in the trial (config, data, out of memory, a bug): recorded with its reason, not retried."""
    KILLED = "killed"
    """Stopped on purpose (a pruned Optuna trial)."""
    PREEMPTED = "preempted"
    """Stopped by SIGTERM (a spot instance's notice, `ray stop`) or Ctrl-C, with a checkpoint at the step it was
    on: not done, not failed; a retry or `gatelab resume` continues from that step."""
    NEW = "new"
    """No run yet: how a table shows a trial the ledger does not know. Never stored."""
    BUSY = "busy"
    """Not run here: another process holds the trial's lock (a concurrent submit). Never stored."""

    def __str__(self) -> str:
        return self.value


DONE_STATUSES = (Status.FINISHED, Status.DIVERGED)  # results: never run again
ENDED_STATUSES = (*DONE_STATUSES, Status.FAILED)  # nothing more will happen without a retry


class DiskFull(OSError):
    """A checkpoint did not fit on its device: deterministic until space is freed, so a trial ends `failed`
    with the reason `disk_full` (not retried); `gatelab resume` continues from the newest intact checkpoint."""


class TrialPreempted(Exception):
    """Raised by run_trial after SIGTERM or Ctrl-C, once the checkpoint of the step it was on is written."""

    def __init__(self, step: int, signal_name: str) -> None:
        super().__init__(f"preempted by {signal_name} at step {step}; the checkpoint of that step is saved")
        self.step, self.signal_name = step, signal_name


@dataclass(frozen=True)
class TrialResult:
    """What running one trial gave."""

    status: Status
    key: str = ""
    """The trial key (set by the grid worker; empty for a trial run by hand)."""
    summary: dict[str, float] = field(default_factory=dict)
    """The summary metrics logged once at the end (trainer/config/metric_names.py: the summary and the probes')."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds: setup, fit, checkpoint (inside fit and at the end), finish; a grid worker adds import_s."""
    error: str | None = None
    """For FAILED: `<reason>: <first line>` or a short traceback."""
    skipped: bool = False
    """Done before this attempt: nothing ran, and the summary is in the ledger, not here."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", Status(self.status))

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "status": self.status.value})

    @classmethod
    def from_json(cls, text: str) -> TrialResult:
        return cls(**json.loads(text))
