"""The grid commands as a user runs them: bad grids, driver SIGKILL then resume, concurrent submits."""

import os
import signal
import time
from pathlib import Path

import pytest

from gatelab.grid.bench.chaos import trial_workers
from gatelab.grid.cli.main import main
from gatelab.tracking import Store, stop_server

from grid_helpers import assert_history_complete, child_runs, gatelab, kill_group, statuses, wait_for, write_grid

pytestmark = [pytest.mark.ray, pytest.mark.mlflow]

MALFORMED = sorted((Path(__file__).parent / "malformed_grids").glob("*.yaml"))


def test_there_are_at_least_20_malformed_grids():
    assert len(MALFORMED) >= 20


@pytest.mark.parametrize("path", MALFORMED, ids=lambda p: p.stem)
def test_malformed_grid_exits_2_with_one_line_and_creates_nothing(path, tmp_path, capsys):
    home = tmp_path / "home"
    code = main(["submit", str(path), "--home", str(home)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and str(path) in err[0], err
    assert not home.exists()  # no MLflow store, run, checkpoint or Ray job


@pytest.fixture
def home(tmp_path):
    yield tmp_path / "home"
    stop_server(Store(tmp_path / "home"))


def test_driver_sigkill_mid_grid_then_resume(home, tmp_path):
    grid = write_grid(
        tmp_path / "killgrid.yaml",
        "killgrid",
        ["baseline", "g1_elementwise_sigmoid", "g1_headwise_sigmoid", "g2_elementwise_sigmoid"],
        max_steps=300,
        checkpoint_every=25,
        max_concurrent=2,
    )
    proc = gatelab("submit", str(grid), home=home)
    store = Store(home)
    wait_for(
        lambda: store.db_path.exists() and any(r["status"] == "finished" for r in statuses(grid, home).values()),
        400,
        proc,
    )
    wait_for(lambda: len(list(store.checkpoints_dir.glob("*/checkpoints/*.ckpt"))) >= 2, 200, proc)
    kill_group(proc)
    before = statuses(grid, home)
    finished_before = {k: r for k, r in before.items() if r["status"] == "finished"}
    assert finished_before and len(finished_before) < 4, before

    resume = gatelab("resume", str(grid), home=home)
    out, _ = resume.communicate(timeout=600)
    assert resume.returncode == 0, out
    after = statuses(grid, home)
    assert {r["status"] for r in after.values()} == {"finished"}
    client, runs = child_runs(store.tracking_uri, "killgrid")
    assert len(runs) == 4  # one MLflow run per trial, continued, never duplicated
    for run in runs:
        key = run.data.tags["trial_key"]
        if key in finished_before:  # not run again
            assert run.data.tags["gatelab.attempt"] == "1"
            assert run.info.end_time / 1000 <= time.time() and after[key]["run_id"] == finished_before[key]["run_id"]
        assert_history_complete(client, run.info.run_id, 300)


def test_two_concurrent_submits_run_each_trial_once(home, tmp_path):
    grid = write_grid(
        tmp_path / "twice.yaml",
        "twice",
        ["baseline", "g1_headwise_sigmoid", "g2_headwise_sigmoid"],
        max_steps=60,
        max_concurrent=2,
    )
    first, second = gatelab("submit", str(grid), home=home), gatelab("submit", str(grid), home=home)
    out1, _ = first.communicate(timeout=600)
    out2, _ = second.communicate(timeout=600)
    assert first.returncode == 0 and second.returncode == 0, out1 + out2
    client, runs = child_runs(Store(home).tracking_uri, "twice")
    assert sorted(r.data.tags["variant"] for r in runs) == ["baseline", "g1_headwise_sigmoid", "g2_headwise_sigmoid"]
    for run in runs:
        assert run.data.tags["gatelab.attempt"] == "1" and run.data.tags["gatelab.status"] == "finished"
        assert_history_complete(client, run.info.run_id, 60)
    parents = client.search_runs([runs[0].info.experiment_id], filter_string="tags.`gatelab.kind` = 'grid'")
    assert len(parents) == 1


def test_sigterm_to_a_trial_worker_checkpoints_its_step_and_ray_retries_from_it(home, tmp_path):
    # What a spot instance's termination notice or `ray stop` does to a running trial.
    steps = 1000  # long enough that the trial is still training when the signal lands, on a fast machine too
    grid = write_grid(
        tmp_path / "preempt.yaml",
        "preempt",
        ["g1_headwise_sigmoid"],
        max_steps=steps,
        checkpoint_every=5000,
        seeds=(7,),
    )
    proc = gatelab("submit", str(grid), home=home)
    store = Store(home)
    workers: list[int] = []

    def training() -> bool:
        workers[:] = trial_workers(proc.pid)
        return bool(workers) and any(r["step"] >= 5 for r in statuses(grid, home).values())

    wait_for(training, 400, proc)
    [worker] = workers
    os.kill(worker, signal.SIGTERM)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    [row] = statuses(grid, home).values()
    assert row["status"] == "finished"
    [trial_dir] = store.checkpoints_dir.glob("*/checkpoints")
    saved = sorted(int(p.stem.split("-")[1]) for p in trial_dir.glob("step-*.ckpt"))
    assert saved[-1] == steps and 5 <= saved[0] < steps, saved  # the preempted step's checkpoint, no interval
    client, [run] = child_runs(store.tracking_uri, "preempt")
    assert run.data.tags["gatelab.attempt"] == "2"  # Ray's retry reopened the same run
    assert_history_complete(client, run.info.run_id, steps)
