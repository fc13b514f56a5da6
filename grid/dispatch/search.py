"""`gatelab submit|resume` of a grid with a `search:` block: Optuna ask/tell here, every trial through Ray.

Not Ray Tune's OptunaSearch (docs/libraries.md, Ray Tune): Tune pickles its state, names trials with random
ids, hard-codes Optuna's NopPruner, and `Tuner.restore` cannot change the search space; gatelab's trials are
content keys resumed from MLflow and their checkpoints. So this is the grid driver's loop on Ray core with
Optuna in between:

  study.ask() -> params as dotted overrides on each grid point of the study -> TrialConfig -> trial key
  -> TrialJob -> the grid's own `run_grid_trial` Ray task (a child run of the grid's parent run, tagged
  optuna.study and optuna.trial_number) -> study.tell().

State: the studies live in `<home>/optuna/<grid>.journal` (Optuna's JournalStorage: one file, lock-safe, no
server) beside the MLflow store; the runs live in MLflow. A killed driver leaves RUNNING Optuna trials; the
next submit/resume re-dispatches them from their stored params (each run resumes from its checkpoint and its
MLflow run), then asks new trials until every study has n_trials COMPLETE + PRUNED + FAIL. A finished
search starts nothing. One driver per grid at a time (an flock; a second one says so and exits).

What Optuna is told:
- finished: COMPLETE, the objective metric (the mean over the trial's runs when the study has replicates);
- diverged: `diverged: worst` (default) tells +inf (-inf when maximizing), so TPE learns the region is bad;
  a FAIL would be ignored by the sampler, which would keep proposing the LRs that blow up. `fail`: FAIL;
- failed (an error in the trial) or a missing/NaN objective: FAIL, with the reason in user attr gatelab.error;
- pruned: the driver polls each running trial's `val_loss` history in MLflow, reports it at its training step
  (`trial.report`), and when the pruner says so cancels the Ray task, ends the run `killed` with tag
  `gatelab.pruned=true` (MLflow has no pruned status) and tells PRUNED.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from optuna.trial import Trial, TrialState

from gatelab.grid.dispatch.loop import DispatchLoop, Sent
from gatelab.grid.dispatch.ray_jobs import experiment_name, home_database, job_for, parent_tags, start_ray
from gatelab.grid.dispatch.search_study import (
    ERROR_ATTR,
    FINISHED,
    KEYS_ATTR,
    PRUNED_AT_STEP_ATTR,
    RUN_IDS_ATTR,
    STATUSES_ATTR,
    best_trial,
    distribution,
    journal_path,
    journal_storage,
    needs,
    open_study,
    params_text,
    study_counts,
)
from gatelab.grid.dispatch.worker import TrialJob
from gatelab.grid.spec.expand import data_prints, label, with_values
from gatelab.grid.spec.grid_spec import GridSpec
from gatelab.grid.spec.identity import trial_key
from gatelab.grid.spec.search_spec import INTERMEDIATE_METRIC, StudyPlan, study_plans
from gatelab.tracking.runs.history import metric_history
from gatelab.tracking.runs.ledger import ensure_parent_run, file_lock, trial_records, trial_records_for_key
from gatelab.tracking.runs.mlflow_tracker import MlflowTracker
from gatelab.tracking.store import Store
from gatelab.trainer.config.outcome import DONE_STATUSES, Status, TrialResult
from gatelab.trainer.config.run_tags import PRUNED_AT_STEP_TAG, PRUNED_TAG, SEARCH_TAG
from gatelab.trainer.config.trial import TrialConfig
from gatelab.trainer.corpus import data_fingerprint

POLL_S = 1.0  # how often running trials' validation losses are read for the pruner
PROGRESS_EVERY_S = 5.0
BUSY_RETRY_S = 5.0  # a run held by another process is offered again after this long


# --- the driver -------------------------------------------------------------------------------------------


@dataclass
class _Run:
    """One grid point of one Optuna trial: what the worker runs."""

    key: str
    config: TrialConfig
    overrides: dict
    label: str


@dataclass
class _Active:
    """An Optuna trial this driver is running (asked now, or left RUNNING by a killed driver)."""

    study: str
    trial: Trial
    runs: list[_Run]
    results: dict = field(default_factory=dict)
    reported: set = field(default_factory=set)


@dataclass
class _Slot:
    """One trial key queued or on Ray, and the Optuna trials waiting on it (two only if params repeat)."""

    job: TrialJob
    trial_ids: set


@dataclass
class SearchOutcome:
    told: list = field(default_factory=list)
    """(study, trial number, state name, value, error or None) told by this driver, in order."""
    counts: dict = field(default_factory=dict)
    """Study -> trials per Optuna state at the end."""
    best: dict = field(default_factory=dict)
    """Study -> (value, params) of its best COMPLETE trial."""
    busy: bool = False
    """Another driver holds this grid's search; nothing was done."""

    @property
    def errors(self) -> int:
        """Trials told FAIL because something broke (not a diverged trial under `diverged: fail`)."""
        return sum(state == "FAIL" and error != "diverged" for _, _, state, _, error in self.told)


class _Driver:
    """The chooser of a search grid: Optuna's asks become trials on the dispatch loop; results are told back."""

    def __init__(
        self,
        spec: GridSpec,
        store: Store,
        uri: str,
        parent_run_id: str,
        studies: dict,
        plans: list,
        loop: DispatchLoop,
        out: Callable,
    ) -> None:
        self.spec, self.search, self.store, self.uri, self.out = spec, spec.search, store, uri, out
        self.experiment = experiment_name(spec)
        self.parent, self.studies, self.loop = parent_run_id, studies, loop
        self.plans = {plan.name: plan for plan in plans}
        self.prints = dict(data_prints(spec))
        self.active: dict[int, _Active] = {}  # by Optuna's storage-wide trial id (numbers repeat across studies)
        self.slots: dict[str, _Slot] = {}
        self.outcome = SearchOutcome()
        self.history: dict[str, dict[int, float]] = {}  # run id -> val_loss by step, as last read
        self._next_study = 0
        self._last_poll = 0.0

    # -- trials -> runs -----------------------------------------------------------------------------------

    def runs_for(self, plan: StudyPlan, params: dict) -> list[_Run]:
        runs = []
        for point in plan.points:
            overrides = {**point.overrides, **params}
            text = label(self.spec.base, overrides)
            config = with_values(self.spec.base, {**overrides, "name": f"{self.spec.name}/{text}"})
            if config.data not in self.prints:
                self.prints[config.data] = data_fingerprint(config.data)
            runs.append(_Run(trial_key(config, self.prints[config.data]), config, overrides, text))
        return runs

    def start(self, study_name: str, trial: Trial, params: dict, reported: set) -> None:
        plan = self.plans[study_name]
        missing = {p.key for p in self.search.params} - set(params)
        if missing:  # a RUNNING trial from before the search space changed
            self.finish_trial(
                study_name,
                trial,
                TrialState.FAIL,
                None,
                f"params {sorted(missing)} were added to the search after this trial was asked",
            )
            return
        try:
            runs = self.runs_for(plan, {p.key: params[p.key] for p in self.search.params})
        except (ValueError, TypeError) as err:  # a combination the bounds check could not foresee
            self.finish_trial(study_name, trial, TrialState.FAIL, None, f"params do not build a trial: {err}")
            return
        trial.set_user_attr(KEYS_ATTR, [run.key for run in runs])
        active = self.active[trial._trial_id] = _Active(study_name, trial, runs, reported=set(reported))
        for run in runs:
            if run.key in self.slots:
                self.slots[run.key].trial_ids.add(trial._trial_id)
                continue
            tags = {SEARCH_TAG: "optuna", "optuna.study": study_name, "optuna.trial_number": str(trial.number)}
            job = job_for(self.spec, self.store, self.uri, self.parent, run, suffix=f" optuna #{trial.number}", **tags)
            self.slots[run.key] = _Slot(job, {trial._trial_id})
            self.loop.enqueue(job, label=run.label)
        self.out(
            f"  started   {study_name} #{trial.number} {params_text(trial.params)} -> "
            + " ".join(run.key for run in active.runs)
        )

    def ask(self) -> bool:
        """Ask one trial of the next study (round robin) that needs one; False when none does."""
        names = list(self.studies)
        for offset in range(len(names)):
            name = names[(self._next_study + offset) % len(names)]
            study = self.studies[name]
            if needs(study, self.search.n_trials) > 0:
                self._next_study = (self._next_study + offset + 1) % len(names)
                trial = study.ask({p.key: distribution(p) for p in self.search.params})
                self.start(name, trial, trial.params, set())
                return True
        return False

    # -- what the dispatch loop asks -----------------------------------------------------------------------

    def resume_running(self) -> None:
        """Trials left RUNNING by a driver that died run again first, from their stored params."""
        for name, study in self.studies.items():
            for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                self.out(f"  resuming  {name} #{frozen.number} (RUNNING when the last driver stopped)")
                # Trial(study, id) is how Optuna's own ask() builds the object that report()/should_prune() need
                self.start(name, Trial(study, frozen._trial_id), frozen.params, set(frozen.intermediate_values))

    def more(self, loop: DispatchLoop) -> bool:
        return self.ask()

    def delivered(self, loop: DispatchLoop, sent: Sent, result: TrialResult) -> None:
        if result.status == Status.BUSY:  # another process holds this trial's lock: offer it again later
            loop.enqueue(sent.job, label=sent.label, delay_s=BUSY_RETRY_S)
            return
        self.deliver(sent.job.key, result)

    def poll(self, loop: DispatchLoop) -> None:
        now = time.monotonic()
        if self.search.pruner is not None and self.active and now - self._last_poll >= POLL_S:
            self._last_poll = now
            self.feed_pruner(trial_records(self.uri, self.experiment))

    def headline(self) -> str:
        done = {name: sum(study_counts(s)[x.name] for x in FINISHED) for name, s in self.studies.items()}
        return (
            f"search {self.spec.name}: {sum(done.values())}/{self.search.n_trials * len(done)} trials told  "
            f"optuna trials running {len(self.active)}"
        )

    def interrupted(self, running: int) -> str:
        return (
            f"{len(self.active)} Optuna trial(s) left RUNNING; `gatelab resume {self.spec.source}` continues them "
            "from their last checkpoints"
        )

    def deliver(self, key: str, result: TrialResult) -> None:
        slot = self.slots.pop(key)
        if result.skipped:  # done before: the ledger has its metrics
            record = trial_records_for_key(self.uri, self.experiment, key)
            result = replace(result, summary=dict(record.metrics) if record else {})
        if result.error:
            self.out(f"  run {key} failed:\n{result.error.rstrip()}")
        for trial_id in slot.trial_ids:
            active = self.active.get(trial_id)
            if active is None:
                continue
            active.results[key] = result
            if all(run.key in active.results for run in active.runs):
                self.finalize(active)

    def finalize(self, active: _Active) -> None:
        statuses = [active.results[run.key].status for run in active.runs]
        metric = self.search.objective.metric
        values = [active.results[run.key].summary.get(metric) for run in active.runs]
        if Status.FAILED in statuses:
            state, value, error = TrialState.FAIL, None, "a run failed (its MLflow run has gatelab.error)"
        elif Status.DIVERGED in statuses or any(v is not None and not math.isfinite(v) for v in values):
            error = "diverged"
            if self.search.diverged == "fail":
                state, value = TrialState.FAIL, None
            else:
                state, value = (
                    TrialState.COMPLETE,
                    math.inf if self.search.objective.direction == "minimize" else -math.inf,
                )
        elif any(v is None for v in values):
            state, value, error = TrialState.FAIL, None, f"metric {metric!r} missing from the finished run"
        else:
            state, value, error = TrialState.COMPLETE, sum(values) / len(values), None
        active.trial.set_user_attr(STATUSES_ATTR, {r.key: str(s) for r, s in zip(active.runs, statuses)})
        self.finish_trial(active.study, active.trial, state, value, error)

    def finish_trial(
        self, study_name: str, trial: Trial, state: TrialState, value: float | None, error: str | None
    ) -> None:
        self.active.pop(trial._trial_id, None)
        run_ids = {}
        for key in trial.user_attrs.get(KEYS_ATTR, []):
            record = trial_records_for_key(self.uri, self.experiment, key)
            if record is not None:
                run_ids[key] = record.run_id
        trial.set_user_attr(RUN_IDS_ATTR, run_ids)
        if error:
            trial.set_user_attr(ERROR_ATTR, error)
        study = self.studies[study_name]
        if state == TrialState.COMPLETE:
            study.tell(trial, value, skip_if_finished=True)
        else:
            study.tell(trial, state=state, skip_if_finished=True)
        self.outcome.told.append((study_name, trial.number, state.name, value, error))
        shown = f" value={value:.4g}" if value is not None else ""
        self.out(
            f"  {state.name.lower():9} {study_name} #{trial.number}{shown} {params_text(trial.params)}"
            + (f" ({error})" if error else "")
        )

    # -- pruning ------------------------------------------------------------------------------------------

    def feed_pruner(self, records: dict) -> None:
        """Report each running trial's new validation losses (mean over its runs, at steps all of them have)."""
        for active in list(self.active.values()):
            curves = []
            for run in active.runs:
                record = records.get(run.key)
                if record is None:  # not started yet: no mean over the runs
                    break
                latest = record.metrics.get(INTERMEDIATE_METRIC)
                curve = self.history.get(record.run_id, {})
                # MLflow's latest value is the one at the largest step: a new evaluation changes it
                if latest is not None and (not curve or curve[max(curve)] != latest):
                    curve = self.history[record.run_id] = metric_history(self.uri, record.run_id, INTERMEDIATE_METRIC)
                curves.append(curve)
            else:
                steps = sorted(set.intersection(*(set(c) for c in curves)) - active.reported) if curves else []
                for step in steps:
                    active.trial.report(sum(c[step] for c in curves) / len(curves), step)
                    active.reported.add(step)
                if steps and active.trial.should_prune():
                    self.prune(active, steps[-1])

    def prune(self, active: _Active, step: int) -> None:
        """Cancel the trial's runs (unless another trial waits on them), end their MLflow runs, tell PRUNED."""
        alone = []
        for run in active.runs:
            slot = self.slots.get(run.key)
            if slot is None:
                continue
            slot.trial_ids.discard(active.trial._trial_id)
            if not slot.trial_ids:
                alone.append(run.key)
        for key, result in self.loop.cancel(alone).items():
            self.slots.pop(key)
            if result is not None:  # it finished before the cancel landed
                active.results[key] = result
            else:
                self._mark_pruned(key, step)
        if all(run.key in active.results for run in active.runs):
            self.finalize(active)
            return
        active.trial.set_user_attr(PRUNED_AT_STEP_ATTR, step)
        self.finish_trial(active.study, active.trial, TrialState.PRUNED, None, None)

    def _mark_pruned(self, key: str, step: int) -> None:
        record = trial_records_for_key(self.uri, self.experiment, key)
        if record is None or record.status in DONE_STATUSES:
            return
        tracker = MlflowTracker.resume(self.uri, record.run_id, asynchronous=False)
        tracker.set_tags({PRUNED_TAG: "true", PRUNED_AT_STEP_TAG: str(step)})
        tracker.set_status(Status.KILLED)


def run_search(
    spec: GridSpec,
    store: Store,
    tracking_uri: str,
    *,
    address: str | None = None,
    max_concurrent: int | None = None,
    out=print,
) -> SearchOutcome:
    """Run (or continue) every study of the grid's search until each has n_trials finished Optuna trials."""
    plans = study_plans(spec)
    path = journal_path(store, spec.name)
    with file_lock(store.locks_dir / f"search-{spec.name}.lock", blocking=False) as acquired:
        if not acquired:
            out(
                f"search {spec.name}: another gatelab process is driving it (lock under {store.home / 'locks'}); "
                "nothing done"
            )
            return SearchOutcome(busy=True)
        storage = journal_storage(path)
        studies = {plan.name: open_study(spec, plan, storage) for plan in plans}
        running = sum(study_counts(s)["RUNNING"] for s in studies.values())
        needed = sum(max(0, needs(s, spec.search.n_trials)) for s in studies.values())
        out(
            f"search {spec.name}: {len(studies)} stud{'y' if len(studies) == 1 else 'ies'} x {spec.search.n_trials} "
            f"trials; {running} to resume, {needed} to ask (journal {path}, MLflow experiment "
            f"{experiment_name(spec)!r} at {tracking_uri})"
        )
        if running or needed:
            parent = ensure_parent_run(
                tracking_uri,
                experiment_name(spec),
                spec.name,
                parent_tags(spec, **{SEARCH_TAG: "optuna", "optuna.storage": str(path)}),
                store.locks_dir,
            )
            start_ray(spec, address)
            loop = DispatchLoop(
                spec,
                tracking_uri,
                experiment_name(spec),
                max_concurrent or spec.ray.max_concurrent,
                out,
                PROGRESS_EVERY_S,
                database=home_database(spec, store),
            )
            driver = _Driver(spec, store, tracking_uri, parent, studies, plans, loop, out)
            driver.resume_running()
            loop.run(driver)
            outcome = driver.outcome
        else:
            outcome = SearchOutcome()
        for name, study in studies.items():
            outcome.counts[name] = study_counts(study)
            best = best_trial(study.get_trials(deepcopy=False), spec.search.objective.direction)
            if best is not None:
                outcome.best[name] = (best.value, dict(best.params))
        return outcome
