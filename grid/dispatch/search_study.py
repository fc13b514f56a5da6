"""The Optuna side of a grid search: the journal beside the MLflow store, studies, samplers and pruners built
from a SearchSpec (every setting explicit), and what `gatelab status` / `submit --dry-run` print and `gatelab
report` reads of a search. Imported only by search commands (it imports optuna)."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from gatelab.grid.cli.terminal import tally
from gatelab.grid.spec.grid_spec import GridSpec
from gatelab.grid.spec.search_spec import ParamSpec, PrunerSpec, SamplerSpec, StudyPlan, study_plans
from gatelab.tracking.store import Store
from gatelab.trainer.config.run_tags import ERROR_TAG, GRID_TAG, PRUNED_AT_STEP_TAG, SEARCH_TAG

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
# The user attributes gatelab keeps on an Optuna study and its trials (Optuna's, not MLflow tags; where one
# holds what an MLflow tag holds, it has the tag's name).
GRID_ATTR = GRID_TAG  # the study's grid
PER_ATTR = "gatelab.per"  # the study's values of the `per` axes
SEARCH_ATTR = SEARCH_TAG  # the study's search block
KEYS_ATTR = "gatelab.keys"  # a trial's gatelab trial keys (one per replicate)
RUN_IDS_ATTR = "gatelab.run_ids"  # their MLflow runs
STATUSES_ATTR = "gatelab.statuses"  # their gatelab statuses
ERROR_ATTR = ERROR_TAG  # why the Optuna trial failed ("diverged", or the first failed replicate's reason)
PRUNED_AT_STEP_ATTR = PRUNED_AT_STEP_TAG


# --- studies and their storage ----------------------------------------------------------------------------


def journal_path(store: Store, grid_name: str) -> Path:
    """Where a grid's studies are kept: beside the MLflow store, one journal file per grid."""
    return store.optuna_dir / f"{grid_name}.journal"


def journal_storage(path: Path) -> JournalStorage:
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def build_sampler(spec: SamplerSpec, seed: int) -> optuna.samplers.BaseSampler:
    """Every TPE setting passed explicitly: Optuna 5 changed `multivariate`'s default (docs/libraries.md, Optuna)."""
    if spec.type == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(
        seed=seed,
        multivariate=spec.multivariate,
        n_startup_trials=spec.n_startup_trials,
        n_ei_candidates=spec.n_ei_candidates,
        constant_liar=spec.constant_liar,
    )


def build_pruner(spec: PrunerSpec | None) -> optuna.pruners.BasePruner:
    if spec is None:
        return optuna.pruners.NopPruner()
    if spec.type == "threshold":
        return optuna.pruners.ThresholdPruner(
            lower=spec.lower, upper=spec.upper, n_warmup_steps=spec.n_warmup_steps, interval_steps=spec.interval_steps
        )
    common = {
        "n_startup_trials": spec.n_startup_trials,
        "n_warmup_steps": spec.n_warmup_steps,
        "interval_steps": spec.interval_steps,
        "n_min_trials": spec.n_min_trials,
    }
    if spec.type == "percentile":
        return optuna.pruners.PercentilePruner(spec.percentile, **common)
    return optuna.pruners.MedianPruner(**common)


def distribution(param: ParamSpec) -> optuna.distributions.BaseDistribution:
    if param.kind == "choice":
        return CategoricalDistribution(param.choices)
    if param.kind == "int":
        return IntDistribution(param.low, param.high)
    return FloatDistribution(param.low, param.high, log=param.kind == "log_uniform")


def open_study(spec: GridSpec, plan: StudyPlan, storage: JournalStorage) -> optuna.Study:
    """The study, created on first use. The sampler is seeded with seed + trials already in the study, so an
    uninterrupted search is reproducible and a resumed one does not replay the first trials' params."""
    search = spec.search
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=storage,
        study_name=plan.name,
        direction=search.objective.direction,
        load_if_exists=True,
        pruner=build_pruner(search.pruner),
    )
    if study.direction.name.lower() != search.objective.direction:
        raise ValueError(
            f"study {plan.name!r} in {storage} was created to {study.direction.name.lower()}, the grid "
            f"now says {search.objective.direction}; rename the grid or delete its journal"
        )
    study.sampler = build_sampler(search.sampler, search.sampler.seed + len(study.get_trials(deepcopy=False)))
    if GRID_ATTR not in study.user_attrs:
        study.set_user_attr(GRID_ATTR, spec.name)
        study.set_user_attr(PER_ATTR, {k: str(v) for k, v in plan.per_values.items()})
        study.set_user_attr(SEARCH_ATTR, search.to_dict())
    return study


def study_counts(study: optuna.Study) -> dict[str, int]:
    counts = {state.name: 0 for state in (*FINISHED, TrialState.RUNNING, TrialState.WAITING)}
    for frozen in study.get_trials(deepcopy=False):
        counts[frozen.state.name] += 1
    return counts


def needs(study: optuna.Study, n_trials: int) -> int:
    counts = study_counts(study)
    return n_trials - sum(counts[s.name] for s in FINISHED) - counts["RUNNING"]


# --- status, dry-run and report --------------------------------------------------------------------------------


def search_rows(spec: GridSpec, store: Store) -> list[dict]:
    """One row per Optuna trial of every study, from the journal (nothing started or created)."""
    return [row for _, rows, _ in search_studies(spec, store) for row in rows]


def told_state(frozen: FrozenTrial) -> str:
    """complete | pruned | diverged | failed | running | waiting: a diverged trial is Optuna's COMPLETE (told the
    worst value) or FAIL by the grid's `diverged:`, told apart only by the driver's gatelab.error."""
    if frozen.user_attrs.get(ERROR_ATTR) == "diverged":
        return "diverged"
    return {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}.get(
        frozen.state.name, frozen.state.name.lower()
    )


def best_trial(trials, direction: str):
    """The COMPLETE trial with the best finite value (a diverged trial told +-inf is never best); None if none."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE and math.isfinite(t.value)]
    if not complete:
        return None
    return (min if direction == "minimize" else max)(complete, key=lambda t: t.value)


def search_studies(spec: GridSpec, store: Store) -> list[tuple[StudyPlan, list[dict], int | None]]:
    """Every study of the grid (in plan order) with its trials as rows and its best trial's number, from the
    journal; a study not yet created has no rows."""
    path = journal_path(store, spec.name)
    storage = JournalStorage(JournalFileBackend(str(path))) if path.exists() else None
    names = set(optuna.get_all_study_names(storage)) if storage else set()
    out = []
    for plan in study_plans(spec):
        trials = []
        if plan.name in names:
            trials = optuna.load_study(study_name=plan.name, storage=storage).get_trials(deepcopy=False)
        best = best_trial(trials, spec.search.objective.direction)
        out.append((plan, [_row(plan.name, t) for t in trials], best.number if best else None))
    return out


def _row(study: str, frozen: FrozenTrial) -> dict:
    return {
        "study": study,
        "number": frozen.number,
        "state": frozen.state.name,
        "told": told_state(frozen),
        "value": frozen.value,
        "params": dict(frozen.params),
        "keys": frozen.user_attrs.get(KEYS_ATTR, []),
        "run_ids": frozen.user_attrs.get(RUN_IDS_ATTR, {}),
        "last_step": max(frozen.intermediate_values, default=None),
        "error": frozen.user_attrs.get(ERROR_ATTR),
    }


def search_table(spec: GridSpec, store: Store) -> str:
    """The studies, their search space and what the journal holds so far."""
    search = spec.search
    rows = search_rows(spec, store)
    space = ", ".join(
        f"{p.key}~{p.kind}{list(p.choices) if p.kind == 'choice' else [p.low, p.high]}" for p in search.params
    )
    lines = [
        f"search {spec.name}: {search.n_trials} trials per study, {search.objective.direction} "
        f"{search.objective.metric}; sampler {search.sampler.type} seed {search.sampler.seed}; "
        f"pruner {search.pruner.type if search.pruner else 'none'}; space {space}"
    ]
    for plan in study_plans(spec):
        mine = [r for r in rows if r["study"] == plan.name]
        told = tally((row["state"].lower() for row in mine), empty="not started")
        lines.append(f"study {plan.name}: {len(plan.points)} run(s) per trial; {told}")
        for row in mine:
            value = f"{row['value']:.4g}" if row["value"] is not None else "-"
            lines.append(
                f"  #{row['number']:<3} {row['state']:8} {value:>9}  {params_text(row['params'])}  "
                + " ".join(row["keys"])
            )
    return "\n".join(lines)


def params_text(params: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
