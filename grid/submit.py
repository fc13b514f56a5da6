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
from types import MappingProxyType

from gatelab.grid.dry_run import training_flops
from gatelab.grid.expand import Trial
from gatelab.grid.spec import GridSpec
from gatelab.grid.worker import TrialJob, record_unreported_failure, run_grid_trial
from gatelab.tracking.ledger import DONE_STATUSES, close_parent_run, ensure_parent_run, trial_records
from gatelab.tracking.store import Store
from gatelab.trainer.provenance import git_sha

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


def experiment_name(spec: GridSpec) -> str:
    return spec.tracking.experiment or spec.name


def trial_tags(spec: GridSpec, trial: Trial) -> dict[str, str]:
    """Tags of a new child run; the worker adds the variant's axes, paper reference, seed and LR."""
    return {"gatelab.grid": spec.name, **{f"override.{k}": str(v) for k, v in trial.overrides.items()}}


def _ray_init(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    # "local", not None: None would silently join whatever cluster /tmp/ray/ray_current_cluster names
    # (another user's or another test's); the grid's ray.address / --address joins one on purpose.
    local = address in (None, "local")
    ray.init(
        address=address or "local",
        include_dashboard=False,
        log_to_driver=True,
        configure_logging=False,
        _system_config=dict(NO_OOM_RETRIES) if local else None,
    )


# Out-of-memory is a deterministic failure (the same trial on the same node runs out again): record it, do not
# retry. A worker that Ray's memory monitor kills is retried on Ray's own budget, apart from the task's
# max_retries, and with Ray 2.60's default that went on indefinitely (6 attempts in 60 s with max_retries=2,
# measured; docs/libraries.md, Ray core). A cluster sets the same with the RAY_task_oom_retries=0 environment
# of every node (ray_cluster.yaml); a joined Ray keeps its own setting.
NO_OOM_RETRIES = MappingProxyType({"task_oom_retries": 0})  # read-only: ray.init adds keys to the dict it gets


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
        {
            "gatelab.grid_file": spec.source,
            "gatelab.grid_file_hash": spec.file_hash,
            "gatelab.git_sha": git_sha(),
            "gatelab.trials": str(len(trials)),
        },
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

    joining = address or spec.ray.address
    _ray_init(joining)
    gpus = ray.cluster_resources().get("GPU", 0)
    if not joining and spec.resources.gpus > gpus:
        # A local Ray cannot grow: such trials would wait forever. (A cluster may autoscale GPUs in.)
        raise ValueError(
            f"{spec.source}: resources.gpus={spec.resources.gpus:g} per trial, but the local Ray has "
            f"{gpus:g} GPUs; set resources.gpus: 0 to train on CPU, or join a cluster with --address"
        )
    cap = max_concurrent or spec.ray.max_concurrent
    checkpoint_root = spec.storage.root(store.checkpoints_dir)
    res = spec.resources
    # A DDP trial's task only drives Ray Train; its workers reserve the CPUs and GPUs.
    task = ray.remote(run_grid_trial).options(
        num_cpus=0 if res.ddp_workers > 1 else res.cpus,
        num_gpus=0 if res.ddp_workers > 1 else res.gpus,
        max_retries=spec.ray.max_retries,
        retry_exceptions=False,
    )
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
                job = TrialJob(
                    key=trial.key,
                    config=trial.config,
                    run_name=f"{trial.label} [{trial.key}]",
                    tags=trial_tags(spec, trial),
                    tracking_uri=tracking_uri,
                    experiment=experiment,
                    parent_run_id=parent,
                    checkpoint_root=checkpoint_root,
                    cache_dir=str(store.cache_dir),
                    ddp_workers=res.ddp_workers,
                    cpus=res.cpus,
                    gpus=res.gpus,
                    max_retries=spec.ray.max_retries,
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
