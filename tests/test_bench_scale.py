"""`gatelab bench scale` at a size CI affords: its simulated trial resumes as a trainer does, and on a loopback
Ray cluster whose worker node is removed mid-grid every trial still ends finished in one run with every step
stored once (grid/bench/scale.py). The cluster-sized figures are in docs/benchmarks.md."""

import pytest

from gatelab.grid.bench.scale import check_grid, run_level
from gatelab.grid.bench.simulated_trial import SimulatedTrial, newest_step, save_checkpoint
from gatelab.grid.spec.expand import expand
from gatelab.grid.spec.grid_file import load_grid
from gatelab.trainer.config.metric_names import FINAL_VAL_PPL, STEP, TRAIN_LOSS
from gatelab.trainer.config.outcome import Status
from gatelab.trainer.config.trial_folder import TrialFolder
from gatelab.trainer.tracker import InMemoryTracker

from grid_helpers import write_grid


def _config(tmp_path, max_steps=40):
    grid = write_grid(tmp_path / "sim.yaml", "sim", ["baseline"], max_steps=max_steps, checkpoint_every=20)
    spec = load_grid(grid, ["base.schedule.log_every=10"])
    return expand(spec)[0].config


def test_a_simulated_trial_resumes_from_its_checkpoint_and_logs_no_step_twice(tmp_path):
    config = _config(tmp_path)
    trial_dir = tmp_path / "trial"
    tracker = InMemoryTracker()
    for step in (10, 20, 30):  # what a killed attempt had stored: past its last checkpoint, at 20
        tracker.log_metrics({STEP: float(step), TRAIN_LOSS: 1.0}, step)
    checkpoints = TrialFolder(trial_dir).checkpoints
    checkpoints.mkdir(parents=True)
    save_checkpoint(checkpoints, 20)
    result = SimulatedTrial(step_s=0.0)(config, tracker, trial_dir, tmp_path)
    assert result.status == Status.FINISHED and FINAL_VAL_PPL in result.summary
    assert [step for step, _ in tracker.metrics[STEP]] == [10, 20, 30, 40]
    assert tracker.status == Status.FINISHED and newest_step(checkpoints) == 20  # none written at the last step


@pytest.mark.ray
@pytest.mark.mlflow
@pytest.mark.slow
def test_a_node_removed_mid_grid_loses_nothing(served_store, tmp_path):
    store, uri = served_store
    lines = []
    level = run_level(
        store,
        uri,
        tmp_path,
        concurrent=4,
        trials=12,
        nodes=2,
        steps=60,
        step_s=0.05,
        remove_node=True,
        out=lines.append,
    )
    assert level.node_removed_at_s is not None and lines, lines
    assert level.retried >= 1  # the removed node's trials ran again elsewhere
    assert level.problems == []  # every trial finished, in one run, every step stored once
    assert len(level.overhead_s) == 12 - level.retried and level.driver_rss_mb


@pytest.mark.mlflow
def test_the_grid_check_finds_a_missing_run_and_a_doubled_step(served_store, tmp_path):
    store, uri = served_store
    from gatelab.grid.dispatch.ray_jobs import experiment_name
    from gatelab.tracking.runs.ledger import TrialRun, open_trial_run

    grid = write_grid(tmp_path / "checked.yaml", "checked", ["baseline", "g1_headwise_sigmoid"], max_steps=20)
    spec = load_grid(grid, ["base.schedule.log_every=10"])
    trials = expand(spec)
    run = TrialRun(uri=uri, experiment=experiment_name(spec), key=trials[0].key, run_name="doubled")
    tracker, _ = open_trial_run(run)
    for step, value in ((10, 10.0), (10, 10.5), (20, 20.0)):  # two points at step 10 (MLflow keeps both)
        tracker.log_metrics({STEP: value}, step)
    tracker.set_status(Status.FINISHED)
    problems = check_grid(store, uri, spec, trials, 20)
    assert len(problems) == 2, problems
    assert any(trials[1].key in p and "0 run(s)" in p for p in problems)
    assert any(trials[0].key in p and "step points" in p for p in problems)
