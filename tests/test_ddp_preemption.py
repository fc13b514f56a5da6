"""Preemption of a DDP trial, for real: a 2-process gloo trial through Ray Train on a local Ray gets SIGTERM,
first to one rank, then (once the restarted group has written a newer checkpoint) to both. Each time Ray Train
restarts the worker group (FailureConfig: the grid's max_retries), the group resumes from the newest checkpoint,
and the trial ends finished in its one MLflow run with every step logged exactly once."""

import signal
import threading

import psutil
import pytest
import ray

from gatelab.grid.dispatch.local_ray import init_local_ray
from gatelab.grid.dispatch.submit import submit
from gatelab.grid.spec.expand import expand
from gatelab.grid.spec.grid_file import load_grid
from gatelab.trainer.config.trial_folder import TrialFolder

from grid_helpers import assert_history_complete, child_runs, wait_for, write_grid

pytestmark = [pytest.mark.ray, pytest.mark.mlflow, pytest.mark.slow]

STEPS = 240


def _ranks() -> list[psutil.Process]:
    """The Ray Train worker processes of this machine's trial (Ray names each by its actor class)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if any("RayTrainWorker" in part for part in proc.info["cmdline"] or ()):
            found.append(proc)
    return found


def _newest_step(folder: TrialFolder) -> int:
    """The step of the newest checkpoint (names carry it: step-0000040.ckpt), 0 when none."""
    steps = [int("".join(c for c in p.stem if c.isdigit()) or 0) for p in folder.checkpoints.glob("step-*.ckpt")]
    return max(steps, default=0)


def test_sigterm_to_one_rank_then_to_all_resumes_the_group_from_its_newest_checkpoint(served_store, tmp_path):
    store, uri = served_store
    spec = load_grid(
        write_grid(
            tmp_path / "ddpterm.yaml",
            "ddpterm",
            ["g1_headwise_sigmoid"],
            max_steps=STEPS,
            cpus=2,
            workers=2,
            max_retries=3,
            checkpoint_every=20,
        )
    )
    trials = expand(spec)
    folder = TrialFolder.of(store.checkpoints_dir, trials[0].key)
    result = {}
    driver = threading.Thread(
        target=lambda: result.update(outcome=submit(spec, trials, store, uri, retry_failed=False)), daemon=True
    )
    init_local_ray(num_cpus=3, include_dashboard=False)
    try:
        driver.start()
        wait_for(lambda: _newest_step(folder) >= 20 and len(_ranks()) == 2, 300, what="a first checkpoint")
        first = _newest_step(folder)
        one = _ranks()[0]
        one.send_signal(signal.SIGTERM)
        one.wait(timeout=60)
        # the restarted group (two new ranks) resumes and checkpoints past where it stopped
        wait_for(
            lambda: _newest_step(folder) > first and len(_ranks()) == 2 and one.pid not in {p.pid for p in _ranks()},
            300,
            what="the restarted group's checkpoint",
        )
        assert _newest_step(folder) < STEPS, "the trial ended before the second signal: give it more steps"
        both = _ranks()
        for rank in both:
            rank.send_signal(signal.SIGTERM)
        psutil.wait_procs(both, timeout=60)
        driver.join(timeout=600)
        assert not driver.is_alive(), "the trial did not end after two restarts"
    finally:
        ray.shutdown()
    assert result["outcome"].statuses == {trials[0].key: "finished"}
    client, runs = child_runs(uri, "ddpterm")
    assert len(runs) == 1  # the restarts continued the trial's one run
    run = runs[0]
    assert run.data.tags["gatelab.status"] == "finished" and "final_val_ppl" in run.data.metrics
    assert_history_complete(client, run.info.run_id, STEPS)  # every step once: nothing lost, nothing doubled
    assert run.data.metrics["tokens_seen"] == STEPS * 4 * 64
