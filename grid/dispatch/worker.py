"""What one Ray task does for one trial: take the trial's lock, open its MLflow run, train, report.

Failure classes (docs/design.md, Conventions): a lost worker process or node never reaches `except` — Ray
retries the task (its `max_retries` is the per-trial budget) and the retry resumes from the newest checkpoint.
Anything raised here (a config or data error, out-of-memory, a bug) is deterministic: recorded as `failed`, not
retried. Divergence is a result (`diverged`), not an error.
"""

from __future__ import annotations

import gc
import os
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from gatelab.grid.dispatch.failures import failure_reason
from gatelab.trainer.config.outcome import Status, TrialPreempted, TrialResult
from gatelab.trainer.config.trial import TrialConfig, run_params, run_tags
from gatelab.trainer.config.trial_folder import TrialFolder

if TYPE_CHECKING:
    from gatelab.tracking.runs.ledger import TrialRun


@dataclass(frozen=True)
class TrialJob:
    """Everything a worker needs; plain data, pickled to the Ray task."""

    key: str
    """Trial key."""
    config: TrialConfig
    """Resolved trial config."""
    run_name: str
    """MLflow run name."""
    tags: dict
    """Tags for a new child run (grid, axes, overrides)."""
    tracking_uri: str
    """MLflow server URI."""
    experiment: str
    """MLflow experiment of the grid."""
    parent_run_id: str
    """The grid's parent run."""
    checkpoint_root: str
    """Trial directories live at checkpoint_root/<key> (shared storage on a cluster)."""
    cache_dir: str
    """Tokenized-corpus cache."""
    home: str
    """The gatelab home: where a worker on any node finds the credentials of the home's MLflow server."""
    ddp_workers: int = 1
    """Processes training the trial: > 1 runs DDP through Ray Train (grid/dispatch/ddp.py)."""
    cpus: int = 1
    """CPUs for the whole trial (split over DDP workers)."""
    gpus: float = 0
    """GPUs for the whole trial (split over DDP workers), or a fraction of one GPU shared with other trials."""
    max_retries: int = 0
    """Restarts of a DDP worker group after a lost worker or node (Ray Train's FailureConfig)."""
    params: dict = field(default_factory=dict)
    """Run params beyond the config's (a ladder trial's rung, size and FLOPs)."""
    runner: Callable[..., TrialResult] | None = None
    """What runs the trial with its open tracker, called as trainer.run.run_trial is; None: run_trial itself (torch,
    imported in the worker). `gatelab bench scale` gives a simulated trial (grid/bench/simulated_trial.py), so the
    whole path around training (Ray, locks, the ledger, checkpoints, retries) is measured without torch."""

    def trial_run(self, tags: Mapping[str, str] | None = None) -> TrialRun:
        """The trial's identity in the ledger, with `tags` added to a new run's."""
        from gatelab.tracking.runs.ledger import TrialRun  # MLflow: only where a worker records

        return TrialRun(
            uri=self.tracking_uri,
            experiment=self.experiment,
            key=self.key,
            run_name=self.run_name,
            parent_run_id=self.parent_run_id,
            tags={**self.tags, **(tags or {})},
            params={**run_params(self.config), **self.params},
        )


@contextmanager
def _first_import_without_collector(module: str):
    """Pause the cyclic garbage collector while a worker first imports `module` (torch, Lightning and
    MLflow behind it), then freeze what the import created. The import allocates millions of long-lived
    objects and the collector keeps re-traversing them: ~1 s of a ~5-s import on the smoke grid's CPUs,
    paid by every Ray worker before its first trial; none of it is garbage. Garbage from before is
    collected first, so nothing collectable is frozen. A no-op once `module` is loaded."""
    if module in sys.modules or not gc.isenabled():
        yield
        return
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def run_grid_trial(job: TrialJob) -> TrialResult:
    """Runs in a Ray worker. BUSY when another process holds the trial (a concurrent submit); skipped, with
    its stored status, when it was already done; FAILED with the error when training raised."""
    import_started = time.perf_counter()  # a worker's one-time imports: `gatelab bench grid` reports them
    with _first_import_without_collector("gatelab.tracking.runs.ledger"):
        from gatelab.tracking.runs.ledger import file_lock, open_trial_run
        from gatelab.tracking.server.process import use_server_credentials
        from gatelab.tracking.store import Store
    import_s = time.perf_counter() - import_started
    use_server_credentials(Store(job.home), job.tracking_uri)

    trial_dir = Path(job.checkpoint_root) / job.key
    with file_lock(TrialFolder(trial_dir).lock, blocking=False) as acquired:
        if not acquired:
            return TrialResult(Status.BUSY, key=job.key)
        tracker, existing = open_trial_run(job.trial_run(), journal=TrialFolder(trial_dir).journal)
        if tracker is None:
            return TrialResult(existing.status, key=job.key, skipped=True)
        try:
            if job.ddp_workers > 1:
                from gatelab.grid.dispatch.ddp import run_ddp_trial

                tracker.flush()
                result = run_ddp_trial(job, tracker.run_id, trial_dir)
                if result.status == Status.FAILED:  # out of memory on a rank: deterministic, said by the result
                    tracker.fail(result.error)
                return replace(result, key=job.key)
            run_trial = job.runner
            if run_trial is None:
                import_started = time.perf_counter()
                with _first_import_without_collector("gatelab.trainer.run"):
                    from gatelab.trainer.run import run_trial  # torch: only inside the worker
                import_s += time.perf_counter() - import_started
            result = run_trial(job.config, tracker, trial_dir, Path(job.cache_dir), reuse_data=True)
        except TrialPreempted as stop:
            # SIGTERM (a spot notice, `ray stop`): the step's checkpoint is saved and the run says `preempted`.
            # The worker ends as a lost one would, so Ray retries the task (its max_retries) from that step.
            print(f"gatelab: trial {job.key} {stop}", file=sys.stderr, flush=True)
            os._exit(143)
        except Exception as err:  # deterministic: record, do not retry
            tracker.fail(failure_reason(err))
            return TrialResult(Status.FAILED, key=job.key, error=traceback.format_exc(limit=3))
        finally:
            tracker.close()
        return replace(result, key=job.key, timings={**result.timings, "import_s": import_s})


def record_unreported_failure(job: TrialJob, error: Exception) -> str:
    """In the driver, when a trial's task ended without a result: Ray's memory monitor killed its worker
    (out-of-memory: deterministic, not retried) or it lost its worker or node more often than its retry
    budget allows. Records the failure in the trial's MLflow run so `gatelab status` shows it, unless another
    process holds the trial (it is running it again). Returns the one-line error for the driver's output."""
    import ray

    from gatelab.tracking.runs.ledger import file_lock, record_failure

    message = failure_reason(error, out_of_memory=isinstance(error, ray.exceptions.OutOfMemoryError))
    try:
        with file_lock(TrialFolder.of(job.checkpoint_root, job.key).lock, blocking=False) as acquired:
            if acquired:
                record_failure(job.trial_run(tags=run_tags(job.config)), message)
    except Exception as unrecorded:  # noqa: BLE001 - e.g. the MLflow server is what failed; keep the grid going
        return f"{message} (not recorded in MLflow: {type(unrecorded).__name__}: {unrecorded})"
    return message
