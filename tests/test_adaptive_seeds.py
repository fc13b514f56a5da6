"""Adaptive seeds (`seeds:` in a grid): the plan and verdicts replayed from results, the dry run's bounds, and a
real grid on a local Ray with MLflow (decided comparisons stop, open ones grow, a resubmit starts nothing, a
driver killed mid-grid resumes from the ledger)."""

import json
import time

import pytest

from gatelab.grid.cli.main import main
from gatelab.grid.dispatch.adaptive import needed, replay
from gatelab.grid.spec.expand import expand
from gatelab.grid.spec.grid_file import load_grid
from gatelab.grid.spec.seed_policy import comparisons, seed_counts
from gatelab.trainer.config.outcome import Status

from grid_helpers import child_runs, gatelab, kill_group

EXAMPLE = "adaptive_seeds"


def _grid(*overrides):
    spec = load_grid(EXAMPLE, list(overrides))
    return spec, expand(spec)


def test_dry_run_counts_the_fewest_and_the_most_trials(capsys):
    assert main(["submit", EXAMPLE, "--dry-run"]) == 0
    assert "8 to 24 trials (adaptive seeds, 2-6 seeds per variant" in capsys.readouterr().out
    spec, trials = _grid()
    assert seed_counts(spec.seeds, trials) == (8, 24)
    assert {t.config.seed for t in trials} == set(range(6))


def test_replay_grows_open_comparisons_and_stops_decided_ones():
    spec, trials = _grid("seeds.margin=0.001")
    comps = {c.name: c for c in comparisons(trials)}
    assert set(comps) == {"g1_elementwise_sigmoid", "g1_headwise_sigmoid", "g1_input_independent"}
    results = {}

    def finish(comp, seed, value):
        results[comp.variant[seed].key] = (Status.FINISHED, value)
        results[comp.baseline[seed].key] = (Status.FINISHED, 0.0)

    # elementwise: far below the baseline on every seed (clearly different); headwise: noise around 0 (open);
    # input_independent: not run yet (waiting)
    for seed in range(2):
        finish(comps["g1_elementwise_sigmoid"], seed, -1.0 - 0.001 * seed)
        finish(comps["g1_headwise_sigmoid"], seed, (-1) ** seed * 0.3)
    states = replay(spec.seeds, list(comps.values()), results)
    assert states["g1_headwise_sigmoid"].planned == 3 and str(states["g1_headwise_sigmoid"].verdict) == "open"
    assert states["g1_input_independent"].planned == 2 and states["g1_input_independent"].pairs == []
    plan = {t.key for t in needed(list(comps.values()), states)}
    assert comps["g1_headwise_sigmoid"].variant[2].key in plan and comps["g1_headwise_sigmoid"].baseline[2].key in plan
    assert comps["g1_elementwise_sigmoid"].variant[2].key not in plan  # baseline seed 2 is needed by headwise only
    # a failed pair blocks its comparison instead of waiting forever
    results[comps["g1_input_independent"].variant[0].key] = (Status.FAILED, float("nan"))
    results[comps["g1_input_independent"].baseline[0].key] = (Status.FINISHED, 0.0)
    blocked = replay(spec.seeds, list(comps.values()), results)["g1_input_independent"]
    assert blocked.blocked and "failed" in blocked.blocked


def test_the_same_results_give_the_same_plan():
    spec, trials = _grid()
    comps = comparisons(trials)
    results = {t.key: (Status.FINISHED, 0.1 * (t.config.seed % 2) + 0.01 * len(t.config.variant)) for t in trials}
    first = {n: (s.planned, str(s.verdict)) for n, s in replay(spec.seeds, comps, results).items()}
    assert first == {n: (s.planned, str(s.verdict)) for n, s in replay(spec.seeds, comps, results).items()}


@pytest.fixture
def ray_shut_down_after():
    """The in-process submits below start a local Ray; later tests start their own."""
    yield
    import ray

    ray.shutdown()


@pytest.mark.ray
@pytest.mark.mlflow
def test_an_adaptive_grid_on_ray_decides_resumes_and_reports(tmp_path, capsys, ray_shut_down_after):
    home = str(tmp_path / "home")
    quick = [
        f"--set={q}"
        for q in ("base.schedule.max_steps=16", "base.eval.every=8", "base.checkpoint.every=8", "seeds.max=3")
    ]
    # margin 1 nat: every variant is equivalent to the baseline after its first two paired seeds
    assert main(["submit", EXAMPLE, "--home", home, "--set", "seeds.margin=1.0", *quick]) == 0
    out = capsys.readouterr().out
    assert "adaptive seeds, 8-12 trials" in out or "adaptive seeds, 8-" in out
    final = [line for line in out.splitlines() if line.startswith("  g1_")]  # the closing verdict lines
    assert len(final) == 3 and all("equivalent, 2 paired seeds" in line for line in final), out
    assert main(["status", EXAMPLE, "--home", home, "--json", "--set", "seeds.margin=1.0", *quick]) == 0
    status = json.loads(capsys.readouterr().out)
    assert {v["verdict"] for v in status["verdicts"]} == {"equivalent"} and len(status["trials"]) == 8
    # the same grid again: decided, so nothing starts
    assert main(["submit", EXAMPLE, "--home", home, "--set", "seeds.margin=1.0", *quick]) == 0
    assert "0 to run" in capsys.readouterr().out
    # margin 0 (nothing is equivalent) on a new grid name: open comparisons grow to max and end undecided
    # unless a difference is found; a driver killed mid-grid resumes from the ledger
    zero = ["--set", "seeds.margin=0", "--set", "name=adaptive_zero", *quick]
    proc = gatelab("submit", EXAMPLE, *zero, "--max-concurrent", "1", home=tmp_path / "home")
    deadline = time.time() + 240
    while time.time() < deadline:
        line = proc.stdout.readline()
        if line.strip().startswith("finished") and "seed=" in line:
            break
    kill_group(proc)
    assert main(["resume", EXAMPLE, "--home", home, *zero]) == 0
    out = capsys.readouterr().out
    verdicts = [line for line in out.splitlines() if line.startswith("  g1_")]
    assert len(verdicts) == 3 and all(("undecided, 3 paired" in v) or ("different" in v) for v in verdicts), out
    _, runs = child_runs(f"sqlite:///{tmp_path}/home/mlflow.db", "adaptive_zero")
    keys = [r.data.tags["trial_key"] for r in runs]
    assert len(keys) == len(set(keys))  # one run per trial key, the killed driver's included
    assert main(["plan", EXAMPLE, "--home", home, "--json", "--effect", "0.05", *zero]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert all(row["paired_seeds"] >= 2 and row["sd"] is not None for row in plan["rows"])
    assert main(["stop-server", "--home", home]) == 0  # the submits keep the home's server up for others
