"""Optuna searches over a grid (grid/dispatch/search.py): the `search:` schema, and small searches on the tiny preset
through a real local Ray, a real MLflow server and an Optuna journal, including a driver SIGKILL and resume."""

import math
from pathlib import Path

import optuna
import pytest
import ray
import yaml
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from gatelab.grid.cli.main import main
from gatelab.grid.dispatch.local_ray import init_local_ray
from gatelab.grid.dispatch.search import run_search
from gatelab.grid.dispatch.search_study import build_pruner, build_sampler, journal_path
from gatelab.grid.spec.config_loader import ConfigError, read_yaml
from gatelab.grid.spec.grid_file import load_grid
from gatelab.grid.spec.search_spec import study_plans
from gatelab.tracking import Store
from gatelab.tracking.stats.rows import max_stable_lr
from gatelab.trainer.config.trial_folder import TrialFolder

from grid_helpers import assert_history_complete, child_runs, gatelab, kill_group, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.mlflow]

LR = {"optim.lr": {"log_uniform": [1.0e-3, 1.0e-2]}}
TPE = {"type": "tpe", "seed": 0, "n_startup_trials": 2, "multivariate": False}


def write_search(
    path: Path,
    name: str,
    *,
    variants=("baseline",),
    seeds=(0,),
    n_trials=2,
    params=None,
    pruner=None,
    max_steps=20,
    max_concurrent=2,
    **search,
) -> Path:
    grid = {
        "name": name,
        "base": {
            "model": {"preset": "tiny"},
            "optim": {"warmup_steps": 2},
            "schedule": {"max_steps": max_steps, "batch_size": 4, "log_every": 1},
            "eval": {"every": 5, "batches": 1, "long_context_factors": [1]},
            "checkpoint": {"every": 5, "keep_last": 2},
        },
        "axes": {**({"variant": list(variants)} if variants else {}), "seed": list(seeds)},
        "ray": {"max_concurrent": max_concurrent, "max_retries": 1},
        "search": {
            "params": params or LR,
            "sampler": TPE,
            "n_trials": n_trials,
            "per": "variant",
            "pruner": pruner,
            **search,
        },
    }
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


def load_studies(store: Store, name: str) -> dict[str, optuna.Study]:
    storage = JournalStorage(JournalFileBackend(str(journal_path(store, name))))
    return {s: optuna.load_study(study_name=s, storage=storage) for s in optuna.get_all_study_names(storage)}


# --- the schema ----------------------------------------------------------------------------------------


def test_search_block_parses_into_studies_with_replicates(tmp_path):
    path = write_search(
        tmp_path / "s.yaml",
        "s",
        variants=("baseline", "g1_headwise_sigmoid"),
        seeds=(0, 1),
        params={**LR, "optim.warmup_steps": {"int": [0, 4]}, "optim.beta2": {"choice": [0.95, 0.999]}},
        pruner={"type": "median", "n_startup_trials": 1},
    )
    spec = load_grid(path, ["search.n_trials=3", "search.params.optim.lr={log_uniform: [1.0e-3, 2.0e-3]}"])
    search = spec.search
    assert [(p.key, p.kind) for p in search.params] == [
        ("optim.lr", "log_uniform"),
        ("optim.warmup_steps", "int"),
        ("optim.beta2", "choice"),
    ]
    assert (search.params[0].low, search.params[0].high, search.n_trials) == (1e-3, 2e-3, 3)
    assert search.per == ("variant",) and search.objective.metric == "final_val_loss"
    plans = study_plans(spec)
    assert [p.name for p in plans] == ["s/baseline", "s/g1_headwise_sigmoid"]
    assert [[pt.config.seed for pt in p.points] for p in plans] == [[0, 1], [0, 1]]  # seeds: replicates

    sampler = build_sampler(search.sampler, 7)
    assert isinstance(sampler, optuna.samplers.TPESampler)
    assert (sampler._multivariate, sampler._n_startup_trials, sampler._constant_liar) == (False, 2, True)
    assert isinstance(build_pruner(search.pruner), optuna.pruners.MedianPruner)
    assert isinstance(build_pruner(None), optuna.pruners.NopPruner)


MALFORMED = [
    ("params: {optim.lrr: {log_uniform: [1.0e-3, 1.0e-2]}}", "search.params.optim.lrr", "did you mean 'optim.lr'"),
    (
        "params: {optim.lr: {loguniform: [1.0e-3, 1.0e-2]}}",
        "search.params.optim.lr.loguniform",
        "did you mean 'log_uniform'",
    ),
    (
        "params: {optim.lr: {log_uniform: [0.0, 1.0e-2]}}",
        "search.params.optim.lr.log_uniform.0",
        "log_uniform needs low > 0",
    ),
    ("params: {optim.lr: {int: [1, 3]}}", "search.params.optim.lr.int", "not an integer field"),
    ("params: {optim.warmup_steps: {int: [-5, 3]}}", "search.params.optim.warmup_steps", "does not build"),
    ("params: {seed: {int: [0, 3]}}", "search.params.seed", "overlaps the axis 'seed'"),
    ("sampler: {type: tpe, seed: 0}", "search.sampler", "multivariate: required"),
    ("sampler: {type: tpx, multivariate: false}", "search.sampler.type", "expected one of tpe, random"),
    ("per: varient", "search.per", "did you mean 'variant'"),
    ("n_trials: 0", "search.n_trials", "expected an integer >= 1"),
    ("n_trail: 3", "search.n_trail", "did you mean 'n_trials'"),
    ("objective: {metric: f_attn, direction: maximize}", "search.pruner", "use objective.direction: minimize"),
]


@pytest.mark.parametrize("override,key,expect", MALFORMED, ids=[m[1] + ":" + m[2][:12] for m in MALFORMED])
def test_malformed_search_names_file_line_and_key(tmp_path, override, key, expect):
    path = write_search(tmp_path / "bad.yaml", "bad", pruner={"type": "median"})
    data = yaml.safe_load(path.read_text())
    data["search"].update(yaml.safe_load(override))
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    lines = read_yaml(path)[1]
    located = key
    while located not in lines:
        located = located.rpartition(".")[0]
    with pytest.raises(ConfigError) as err:
        load_grid(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}:{lines[located]}: {key}") and expect in message, message


def test_malformed_search_exits_2_and_creates_nothing(tmp_path, capsys):
    path = write_search(tmp_path / "bad.yaml", "bad", n_trials=0)
    home = tmp_path / "home"
    assert main(["submit", str(path), "--home", str(home)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "search.n_trials" in err[0] and not home.exists()


# --- real searches -------------------------------------------------------------------------------------


def test_killed_search_resumes_without_duplicates(served_store, tmp_path):
    """SIGKILL the driver while Optuna trial #1 trains (after #0 is told), then `gatelab resume`: #1 continues
    its own MLflow run from its checkpoint, #2 is asked, and every Optuna trial has exactly one child run."""
    store, uri = served_store
    # 300 steps: long enough that #1 cannot finish in the moment between the SIGKILL and Ray reaping the
    # dead driver's workers (at 80 steps it sometimes did, and then ran once, as attempt 1).
    grid = write_search(tmp_path / "killed.yaml", "killed", n_trials=3, max_steps=300, max_concurrent=1)
    proc = gatelab("submit", str(grid), home=store.home)
    path = journal_path(store, "killed")

    def second_trial_checkpointed() -> bool:
        if not path.exists() or "killed/baseline" not in (studies := load_studies(store, "killed")):
            return False
        trials = studies["killed/baseline"].get_trials(deepcopy=False)
        if len(trials) < 2 or trials[0].state != TrialState.COMPLETE or not trials[1].user_attrs.get("gatelab.keys"):
            return False
        key = trials[1].user_attrs["gatelab.keys"][0]
        return bool(list(TrialFolder.of(store.checkpoints_dir, key).checkpoints.glob("*.ckpt")))

    try:
        wait_for(second_trial_checkpointed, 300, proc)
    finally:
        kill_group(proc)
    before = load_studies(store, "killed")["killed/baseline"].get_trials(deepcopy=False)
    assert [t.state for t in before] == [TrialState.COMPLETE, TrialState.RUNNING]

    resume = gatelab("resume", str(grid), home=store.home)
    out, _ = resume.communicate(timeout=400)
    assert resume.returncode == 0, out
    assert "resuming  killed/baseline #1" in out, out
    trials = load_studies(store, "killed")["killed/baseline"].get_trials(deepcopy=False)
    assert [t.number for t in trials] == [0, 1, 2] and {t.state for t in trials} == {TrialState.COMPLETE}
    client, runs = child_runs(uri, "killed")
    by_number = {int(r.data.tags["optuna.trial_number"]): r for r in runs}
    assert len(runs) == 3 and sorted(by_number) == [0, 1, 2]  # one child run per Optuna trial, none twice
    for trial in trials:
        run = by_number[trial.number]
        assert run.data.tags["optuna.study"] == "killed/baseline" and run.data.tags["gatelab.status"] == "finished"
        assert trial.user_attrs["gatelab.keys"] == [run.data.tags["trial_key"]]
        assert trial.user_attrs["gatelab.run_ids"] == {run.data.tags["trial_key"]: run.info.run_id}
        assert trial.value == pytest.approx(run.data.metrics["final_val_loss"], rel=1e-9)
        assert run.data.tags["gatelab.attempt"] == ("2" if trial.number == 1 else "1")
        assert_history_complete(client, run.info.run_id, 300)


@pytest.fixture(scope="module")
def local_ray():
    init_local_ray(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def test_search_per_variant_end_to_end_then_resubmit_does_nothing(served_store, local_ray, tmp_path, capsys):
    store, uri = served_store
    grid = write_search(tmp_path / "e2e.yaml", "e2e", variants=("baseline", "g1_elementwise_sigmoid"), n_trials=2)
    spec = load_grid(grid)
    outcome = run_search(spec, store, uri)
    assert sorted((s, n) for s, n, *_ in outcome.told) == [
        ("e2e/baseline", 0),
        ("e2e/baseline", 1),
        ("e2e/g1_elementwise_sigmoid", 0),
        ("e2e/g1_elementwise_sigmoid", 1),
    ]
    client, runs = child_runs(uri, "e2e")
    assert len(runs) == 4
    runs_by = {(r.data.tags["optuna.study"], int(r.data.tags["optuna.trial_number"])): r for r in runs}
    studies = load_studies(store, "e2e")
    assert sorted(studies) == ["e2e/baseline", "e2e/g1_elementwise_sigmoid"]
    for name, study in studies.items():
        assert study.user_attrs["gatelab.search"]["sampler"]["multivariate"] is False
        trials = study.get_trials(deepcopy=False)
        assert len(trials) == 2 and {t.state for t in trials} == {TrialState.COMPLETE}
        for trial in trials:
            run = runs_by[(name, trial.number)]
            assert run.data.tags["variant"] == name.split("/")[1]
            assert float(run.data.params["optim.lr"]) == pytest.approx(trial.params["optim.lr"], rel=1e-12)
            assert trial.value == pytest.approx(run.data.metrics["final_val_loss"], rel=1e-9)
            assert run.data.tags["mlflow.parentRunId"] and run.data.tags["gatelab.status"] == "finished"
    again = run_search(spec, store, uri)  # a finished search asks nothing and starts nothing
    assert again.told == [] and len(child_runs(uri, "e2e")[1]) == 4
    assert main(["status", str(grid), "--home", str(store.home)]) == 0
    table = capsys.readouterr().out
    assert "study e2e/baseline: 1 run(s) per trial; 2 complete" in table and "#1   COMPLETE" in table


def test_report_of_a_search_lists_every_trial_its_best_and_max_stable_lr(served_store, local_ray, tmp_path, capsys):
    """`gatelab report` on a finished search: every Optuna trial with its state, each study's best trial, the
    figures, and per variant the max stable LR that max_stable_lr gives on the same runs (logged on the parent)."""
    store, uri = served_store
    # up to LR 40: the tiny model diverges at the top (test_diverged_trial_...), so some trials may be unstable
    grid = write_search(
        tmp_path / "rep.yaml",
        "rep",
        variants=("baseline", "g1_elementwise_sigmoid"),
        n_trials=3,
        params={"optim.lr": {"log_uniform": [1.0e-3, 40.0]}},
    )
    run_search(load_grid(grid), store, uri)
    out = tmp_path / "report"
    assert main(["report", str(grid), "--home", str(store.home), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    text = (out / "report.md").read_text()
    assert (out / "search_optim.lr.png").stat().st_size > 0 and "](search_optim.lr.png)" in text
    assert "unfinished" not in printed  # the grid's base points are not reported as trials
    client, runs = child_runs(uri, "rep")
    by_key = {r.data.tags["trial_key"]: r for r in runs}
    [parent] = client.search_runs(
        [client.get_experiment_by_name("rep").experiment_id], filter_string="tags.`gatelab.kind` = 'grid'"
    )
    states = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}
    for name, study in load_studies(store, "rep").items():
        label = name.split("/")[1]
        trials = study.get_trials(deepcopy=False)
        assert len(trials) == 3
        finite = [t for t in trials if t.state == TrialState.COMPLETE and math.isfinite(t.value)]
        best = min(finite, key=lambda t: t.value).number if finite else None
        for t in trials:
            state = "diverged" if t.user_attrs.get("gatelab.error") == "diverged" else states[t.state.name]
            mark = " (best)" if t.number == best else ""
            assert f"| {label} | #{t.number}{mark} | {state} |" in text, (label, t.number, state, text)
        results = [
            (t.params["optim.lr"], run.data.tags["gatelab.status"], run.data.metrics.get("final_val_loss", math.nan))
            for t in trials
            for run in (by_key[k] for k in t.user_attrs["gatelab.keys"])
        ]
        expected = max_stable_lr(results)
        logged = parent.data.metrics.get(f"max_stable_lr.{label}")
        assert logged == (pytest.approx(expected, rel=1e-12) if expected is not None else None), (label, results)
        assert (f"#{best}" if best is not None else "none") in printed.split(f"study {name}:")[1].split("\n")[0]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.md", "report/search_optim.lr.png"} <= artifacts

    assert main(["report", str(grid), "--home", str(store.home), "--out", str(out), "--format", "csv"]) == 0
    lines = (out / "search_trials.csv").read_text().strip().splitlines()
    assert len(lines) == 1 + 6 and len((out / "search_studies.csv").read_text().strip().splitlines()) == 1 + 2


def test_report_of_a_searched_choice_of_strings_draws_and_tabulates_each_value(
    served_store, local_ray, tmp_path, capsys
):
    """A choice of strings has no number line: the report draws each value's runs (search_variant.png) and
    tabulates them per value; trials that asked the same value share one run, counted once."""
    store, uri = served_store
    choices = ["baseline", "g1_elementwise_sigmoid"]
    grid = write_search(
        tmp_path / "pick.yaml",
        "pick",
        variants=(),
        n_trials=3,
        max_steps=8,
        params={"variant": {"choice": choices}},
        sampler={"type": "random", "seed": 0},
        per=None,
    )
    run_search(load_grid(grid), store, uri)
    out = tmp_path / "report"
    assert main(["report", str(grid), "--home", str(store.home), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert (out / "search_variant.png").read_bytes()[:4] == b"\x89PNG" and "](search_variant.png)" in text
    [study] = load_studies(store, "pick").values()
    keys = {}
    for trial in study.get_trials(deepcopy=False):
        keys.setdefault(trial.params["variant"], set()).update(trial.user_attrs["gatelab.keys"])
    assert set(keys) == set(choices)  # the sampler's seed asks both: every value has a row to check
    runs = {r.data.tags["trial_key"]: r for r in child_runs(uri, "pick")[1]}
    section = text.split("## Per value of variant")[1].split("\n## ")[0]
    expected = []
    for value in choices:
        [run] = [runs[key] for key in keys[value]]  # one run however many trials asked this value
        loss, spikes = run.data.metrics["final_val_loss"], run.data.metrics["spike_count"]
        expected.append(f"| pick | {value} | 1 | {loss:.4g} | {spikes:.4g} | 0 |")
    assert [line for line in section.splitlines() if line.startswith("| pick")] == expected


def test_diverged_trial_is_told_the_worst_value_or_fail(served_store, local_ray, tmp_path):
    store, uri = served_store
    lr = {"optim.lr": {"uniform": [20.0, 50.0]}}
    outcome = run_search(load_grid(write_search(tmp_path / "div.yaml", "div", n_trials=1, params=lr)), store, uri)
    [(_, _, state, value, error)] = outcome.told
    assert (state, value, error) == ("COMPLETE", math.inf, "diverged")
    [run] = child_runs(uri, "div")[1]
    assert run.data.tags["gatelab.status"] == "diverged" and "diverged_at_step" in run.data.metrics
    trial = load_studies(store, "div")["div/baseline"].trials[0]
    assert trial.value == math.inf and trial.user_attrs["gatelab.statuses"] == {run.data.tags["trial_key"]: "diverged"}

    grid = write_search(tmp_path / "divfail.yaml", "divfail", n_trials=1, params=lr, diverged="fail")
    outcome = run_search(load_grid(grid), store, uri)
    assert [(state, error) for _, _, state, _, error in outcome.told] == [("FAIL", "diverged")]
    assert outcome.errors == 0  # a divergence is a result, not an error: the command still exits 0


def test_repeated_params_share_one_run(served_store, local_ray, tmp_path):
    """Two trials asking the same values have the same trial key: one run, both told its value."""
    store, uri = served_store
    grid = write_search(tmp_path / "same.yaml", "same", n_trials=2, params={"optim.lr": {"choice": [3.0e-3]}})
    outcome = run_search(load_grid(grid), store, uri)
    assert sorted(n for _, n, *_ in outcome.told) == [0, 1]
    [run] = child_runs(uri, "same")[1]
    trials = load_studies(store, "same")["same/baseline"].trials
    assert [t.user_attrs["gatelab.keys"] for t in trials] == [[run.data.tags["trial_key"]]] * 2
    assert trials[0].value == trials[1].value == pytest.approx(run.data.metrics["final_val_loss"], rel=1e-9)


def test_hopeless_trial_is_pruned_from_its_validation_losses(served_store, local_ray, tmp_path):
    """A threshold pruner no loss passes prunes at the first evaluation the driver reads: the Ray task is
    cancelled, the run ends `killed` with gatelab.pruned, and Optuna holds the losses MLflow logged."""
    store, uri = served_store
    grid = write_search(
        tmp_path / "prune.yaml", "prune", n_trials=1, max_steps=400, pruner={"type": "threshold", "upper": 0.0}
    )
    outcome = run_search(load_grid(grid), store, uri)
    assert [(s, n, state) for s, n, state, *_ in outcome.told] == [("prune/baseline", 0, "PRUNED")]
    trial = load_studies(store, "prune")["prune/baseline"].trials[0]
    assert trial.state == TrialState.PRUNED and trial.intermediate_values
    client, [run] = child_runs(uri, "prune")
    assert run.data.tags["gatelab.pruned"] == "true" and run.data.tags["gatelab.status"] == "killed"
    assert run.info.status == "KILLED" and int(run.data.tags["gatelab.pruned_at_step"]) == max(
        trial.intermediate_values
    )
    logged = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_loss")}
    assert all(logged[step] == pytest.approx(value, rel=1e-12) for step, value in trial.intermediate_values.items())
    assert max(m.step for m in client.get_metric_history(run.info.run_id, "train_loss")) < 400
    assert "final_val_loss" not in run.data.metrics


def _with_resources(path: Path, **resources) -> Path:
    grid = yaml.safe_load(path.read_text())
    grid["resources"] = resources
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


def test_a_search_trains_ddp_trials_with_the_grids_resources(served_store, local_ray, tmp_path):
    # The search driver once built its jobs without the grid's DDP workers, CPUs, GPUs and retry budget: a
    # `workers: 2` search trained each trial in one process. Both drivers now share one job builder.
    store, uri = served_store
    # seed 5: a trial of its own (the same key as another test's trial would find that one's checkpoints)
    grid = write_search(
        tmp_path / "ddp.yaml", "search-ddp", seeds=(5,), n_trials=1, params={"optim.lr": {"choice": [3.0e-3]}}
    )
    spec = load_grid(_with_resources(grid, workers=2, cpus=2))
    assert spec.resources.ddp_workers == 2
    outcome = run_search(spec, store, uri)
    assert [n for _, n, *_ in outcome.told] == [0]
    [run] = child_runs(uri, "search-ddp")[1]
    key = run.data.tags["trial_key"]
    assert run.data.tags["gatelab.status"] == "finished" and run.data.tags["optuna.study"] == "search-ddp/baseline"
    assert len(list((store.checkpoints_dir / key / "other-ranks").iterdir())) == 1  # rank 1 ran
    assert run.data.metrics["tokens_seen"] == 20 * 4 * 64  # the global batch, split over the two ranks


def test_a_search_asking_for_gpus_a_local_ray_lacks_is_refused(served_store, local_ray, tmp_path):
    store, uri = served_store
    grid = write_search(tmp_path / "gpu.yaml", "search-gpu", n_trials=1)
    with pytest.raises(ValueError, match=r"resources.gpus=1 per trial, but the local Ray has 0 GPUs"):
        run_search(load_grid(_with_resources(grid, gpus=1)), store, uri)
