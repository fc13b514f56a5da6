"""The grid driver: ledger lookup, Ray dispatch with an in-flight cap, progress, and what Ctrl-C leaves.

Ray does the scheduling (resources per trial), retries of system failures (task `max_retries`) and
node-loss handling; this loop only decides which trials to send and shows progress. All state is in
MLflow and on storage, so `gatelab resume` can pick up after any kill.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field

from gatelab.grid.dispatch import experiment_name, parent_tags, start_ray, trial_job, trial_tags, trial_task
from gatelab.grid.dry_run import training_flops
from gatelab.grid.expand import Trial
from gatelab.grid.spec import GridSpec
from gatelab.grid.worker import record_unreported_failure
from gatelab.tracking.ledger import DONE_STATUSES, close_parent_run, ensure_parent_run, trial_records
from gatelab.tracking.store import Store

PROGRESS_EVERY_S = 2.0  # how often the driver wakes to collect results
PROGRESS_PRINT_S = 30.0  # a progress line this often (and once at the start); each result has its own line


@dataclass
class SubmitOutcome:
    statuses: dict[str, str] = field(default_factory=dict)
    """Final status per trial key as this submit saw it (busy = run by another process)."""
    skipped: int = 0
    """Trials already done before this submit."""
    timings: dict[str, dict] = field(default_factory=dict)
    """Per trial run here: wall_s (dispatch to result, seen by the driver) plus the worker's timings."""


def submit(
    spec: GridSpec,
    trials: list[Trial],
    store: Store,
    tracking_uri: str,
    *,
    retry_failed: bool,
    address: str | None = None,
    max_concurrent: int | None = None,
    out=print,
) -> SubmitOutcome:
    """Run every trial that is not done (and, with retry_failed, also those that failed)."""
    import ray

    experiment = experiment_name(spec)
    parent = ensure_parent_run(
        tracking_uri,
        experiment,
        spec.name,
        parent_tags(spec, **{"gatelab.trials": str(len(trials))}),
        store.home / "locks",
    )
    records = trial_records(tracking_uri, experiment)
    outcome = SubmitOutcome()
    skip = set(DONE_STATUSES) | (set() if retry_failed else {"failed"})
    todo = []
    for trial in trials:
        status = records[trial.key].status if trial.key in records else None
        if status in skip:
            outcome.statuses[trial.key] = status
            outcome.skipped += 1
        else:
            todo.append(trial)
    out(
        f"grid {spec.name}: {len(trials)} trials, {outcome.skipped} already done or failed, "
        f"{len(todo)} to run (MLflow experiment {experiment!r} at {tracking_uri})"
    )
    if not todo:
        close_parent_run(tracking_uri, parent, outcome.statuses)
        return outcome

    start_ray(spec, address)
    cap = max_concurrent or spec.ray.max_concurrent
    task = trial_task(spec)
    # Longest first (by estimated FLOPs; ties keep the grid's order): the classic makespan heuristic, so
    # the grid does not end with one long trial running while every other slot idles.
    pending = dispatch_order(todo)
    in_flight: dict = {}  # Ray object ref -> (trial, its job)
    dispatched: dict[str, float] = {}
    last_progress = -PROGRESS_PRINT_S
    try:
        while pending or in_flight:
            while pending and len(in_flight) < cap:
                trial = pending.pop(0)
                job = trial_job(
                    spec,
                    store,
                    tracking_uri,
                    parent,
                    key=trial.key,
                    config=trial.config,
                    run_name=f"{trial.label} [{trial.key}]",
                    tags=trial_tags(spec, trial.overrides),
                )
                in_flight[task.remote(job)] = trial, job
                dispatched[trial.key] = time.perf_counter()
            done, _ = ray.wait(list(in_flight), num_returns=1, timeout=PROGRESS_EVERY_S)
            for ref in done:
                trial, job = in_flight.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as err:  # killed for memory, or the retry budget spent
                    result = {"status": "failed", "error": record_unreported_failure(job, err)}
                outcome.statuses[trial.key] = result["status"]
                outcome.timings[trial.key] = {
                    "wall_s": time.perf_counter() - dispatched[trial.key],
                    **result.get("timings", {}),
                }
                line = f"  {result['status']:9} {trial.key} {trial.label}"
                if result.get("summary", {}).get("final_val_ppl") is not None:
                    line += f"  val_ppl={result['summary']['final_val_ppl']:.3f}"
                if result.get("error"):
                    line += f"\n{result['error'].rstrip()}"
                out(line)
            if time.monotonic() - last_progress >= PROGRESS_PRINT_S:
                last_progress = time.monotonic()
                _progress(out, tracking_uri, experiment, outcome, in_flight, len(trials), len(pending))
    except KeyboardInterrupt:
        for ref in in_flight:
            ray.cancel(ref, force=True)
        out(
            f"interrupted: {len(in_flight)} running trial(s) stopped; `gatelab resume {spec.source}` "
            "finishes them from their last checkpoints"
        )
        raise
    close_parent_run(tracking_uri, parent, outcome.statuses)
    return outcome


def dispatch_order(trials: list[Trial]) -> list[Trial]:
    """The order trials are handed to Ray: largest estimated training FLOPs first, stable on ties."""
    return sorted(trials, key=training_flops, reverse=True)


def _progress(out, uri: str, experiment: str, outcome: SubmitOutcome, in_flight: dict, total: int, queued: int) -> None:
    counts = Counter(outcome.statuses.values())
    records = trial_records(uri, experiment) if in_flight else {}
    steps = []
    for trial, _ in in_flight.values():
        record = records.get(trial.key)
        step = int(record.metrics.get("step", 0)) if record else 0
        steps.append(f"{trial.key}@{step}/{trial.config.schedule.max_steps}")
    done = sum(counts[s] for s in DONE_STATUSES)
    out(
        f"[{time.strftime('%H:%M:%S')}] done {done}/{total}  running {len(in_flight)}  queued {queued}  "
        f"failed {counts['failed']}  busy {counts['busy']}  | " + " ".join(steps),
    )
    sys.stdout.flush()
