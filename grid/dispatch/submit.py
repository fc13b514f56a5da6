"""`gatelab submit|resume` of a plain grid: the ledger says which trials are not done, and the dispatch loop
runs them, longest first.

Ray does the scheduling (resources per trial), retries of system failures (task `max_retries`) and node-loss
handling; the one dispatch loop (grid/dispatch/loop.py) sends, collects and shows progress. All state is in MLflow
and on storage, so `gatelab resume` can pick up after any kill."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from gatelab.grid.dispatch.adaptive import AdaptiveSeeds, needed, verdict_line
from gatelab.grid.dispatch.loop import DispatchLoop, Sent
from gatelab.grid.dispatch.progress import PROGRESS_PRINT_S, ProgressView
from gatelab.grid.dispatch.ray_jobs import experiment_name, home_database, job_for, parent_tags, start_ray
from gatelab.grid.dispatch.settled import kept_statuses
from gatelab.grid.spec.expand import Trial
from gatelab.grid.spec.grid_spec import GridSpec
from gatelab.grid.spec.seed_policy import seed_counts
from gatelab.grid.spec.trial_cost import training_flops
from gatelab.tracking.runs.ledger import close_parent_run, ensure_parent_run, trial_records
from gatelab.tracking.store import Store
from gatelab.trainer.config.metric_names import FINAL_VAL_PPL
from gatelab.trainer.config.outcome import DONE_STATUSES, Status, TrialResult
from gatelab.trainer.config.run_tags import TRIALS_TAG


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
    runner=None,
    view: ProgressView | None = None,
) -> SubmitOutcome:
    """Run every trial that is not done (and, with retry_failed, also those that failed). `runner`: what trains
    each trial (TrialJob.runner; None: the trainer). `view`: where the loop's progress goes (None: plain lines
    through `out`)."""
    experiment = experiment_name(spec)
    parent = ensure_parent_run(
        tracking_uri,
        experiment,
        spec.name,
        parent_tags(spec, **{TRIALS_TAG: str(len(trials))}),
        store.locks_dir,
    )
    records = trial_records(tracking_uri, experiment)
    if spec.seeds is not None:
        return _submit_adaptive(
            spec,
            trials,
            store,
            tracking_uri,
            parent=parent,
            records=records,
            retry_failed=retry_failed,
            address=address,
            max_concurrent=max_concurrent,
            out=out,
            view=view,
        )
    outcome = SubmitOutcome()
    skip = kept_statuses(retry_failed)
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
    database = home_database(spec, store)
    loop = DispatchLoop(spec, tracking_uri, experiment, cap, out, PROGRESS_PRINT_S, database=database, view=view)
    loop.run(_FixedList(spec, store, tracking_uri, parent, todo, len(trials), outcome, out, runner))
    close_parent_run(tracking_uri, parent, outcome.statuses)
    return outcome


def _submit_adaptive(
    spec: GridSpec,
    trials: list[Trial],
    store: Store,
    uri: str,
    *,
    parent: str,
    records: dict,
    retry_failed: bool,
    address: str | None,
    max_concurrent: int | None,
    out,
    view: ProgressView | None = None,
) -> SubmitOutcome:
    """A `seeds:` grid: the seeds its verdicts still need (grid/dispatch/adaptive.py)."""
    chooser = AdaptiveSeeds(spec, store, uri, parent, trials, records, retry_failed, out)
    wanted = needed(chooser.comps, chooser.states)
    todo = [t for t in wanted if t.key not in chooser.results]
    low, high = seed_counts(spec.seeds, trials)
    out(
        f"grid {spec.name}: adaptive seeds, {low}-{high} trials; {len(wanted) - len(todo)} of the {len(wanted)} the "
        f"verdicts need now are done, {len(todo)} to run (MLflow experiment {experiment_name(spec)!r} at {uri})"
    )
    if todo:
        start_ray(spec, address)
        cap = max_concurrent or spec.ray.max_concurrent
        loop = DispatchLoop(
            spec, uri, experiment_name(spec), cap, out, PROGRESS_PRINT_S, database=home_database(spec, store), view=view
        )
        loop.run(chooser)
    for name, state in chooser.states.items():
        out("  " + verdict_line(name, state, spec.seeds.metric))
    outcome = SubmitOutcome(timings=chooser.timings)
    outcome.statuses = {
        t.key: chooser.statuses.get(t.key, Status.RUNNING) for t in needed(chooser.comps, chooser.states)
    }
    outcome.skipped = len(wanted) - len(todo)
    close_parent_run(uri, parent, outcome.statuses)
    return outcome


class _FixedList:
    """The chooser of a plain grid: every trial not done, longest first."""

    def __init__(self, spec, store, uri, parent, todo, total, outcome, out, runner=None) -> None:
        self.spec, self.store, self.uri, self.parent, self.runner = spec, store, uri, parent, runner
        # Longest first (by estimated FLOPs; ties keep the grid's order): the classic makespan heuristic, so
        # the grid does not end with one long trial running while every other slot idles.
        self.pending = dispatch_order(todo)
        self.total, self.outcome, self.out = total, outcome, out

    def more(self, loop: DispatchLoop) -> bool:
        if not self.pending:
            return False
        trial = self.pending.pop(0)
        job = job_for(self.spec, self.store, self.uri, self.parent, trial, runner=self.runner)
        loop.enqueue(job, label=trial.label)
        return True

    def delivered(self, loop: DispatchLoop, sent: Sent, result: TrialResult) -> None:
        key = sent.job.key
        self.outcome.statuses[key] = result.status
        self.outcome.timings[key] = {"wall_s": sent.wall_s(), **result.timings}
        line = f"  {result.status:9} {key} {sent.label}"
        if result.summary.get(FINAL_VAL_PPL) is not None:
            line += f"  val_ppl={result.summary[FINAL_VAL_PPL]:.3f}"
        if result.error:
            line += f"\n{result.error.rstrip()}"
        self.out(line)

    def poll(self, loop: DispatchLoop) -> None:
        pass

    def headline(self) -> str:
        counts = Counter(self.outcome.statuses.values())
        done = sum(counts[s] for s in DONE_STATUSES)
        return (
            f"done {done}/{self.total}  to send {len(self.pending)}  failed {counts[Status.FAILED]}  "
            f"busy {counts[Status.BUSY]}"
        )

    def interrupted(self, running: int) -> str:
        return (
            f"{running} running trial(s) stopped; `gatelab resume {self.spec.source}` finishes them from their "
            "last checkpoints"
        )


def dispatch_order(trials: list[Trial]) -> list[Trial]:
    """The order trials are handed to Ray: largest estimated training FLOPs first, stable on ties."""
    return sorted(trials, key=training_flops, reverse=True)
