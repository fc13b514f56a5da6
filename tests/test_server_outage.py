"""The tracking server goes away mid-grid, for real: its process group is SIGKILLed while trials train.

- Under a driver (`gatelab submit`): the driver starts the server again on its port, the trials never stop
  training, and every metric step arrives exactly once; no run is left running.
- With nobody to bring it back: a trial that ends while the server is away keeps what it could not send in its
  journal, and the next `gatelab status` sends it (the run is finished, with its whole history and artifacts).
- Ctrl-C stops a driver whose server is gone.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from gatelab.grid.cli.main import main
from gatelab.grid.dispatch.ray_jobs import experiment_name, job_for
from gatelab.grid.spec.expand import expand
from gatelab.grid.spec.grid_file import load_grid
from gatelab.tracking.runs.ledger import ensure_parent_run
from gatelab.tracking.server.process import ensure_server, read_state, running_server, stop_server
from gatelab.tracking.store import Store
from gatelab.trainer.config.outcome import Status
from gatelab.trainer.config.trial_folder import JOURNAL, PROBES, TrialFolder

from grid_helpers import assert_history_complete, child_runs, gatelab, kill_group, wait_for, write_grid

pytestmark = [pytest.mark.mlflow]

MAX_STEPS = 60


def _kill_server(store: Store) -> int:
    info = read_state(store)
    os.killpg(info.pid, signal.SIGKILL)
    return info.pid


def _checkpoints(root: Path) -> list[Path]:
    return list(root.glob("*/checkpoints/*.ckpt"))


def _assert_ended_once_each(uri: str, spec, max_steps: int) -> None:
    client, runs = child_runs(uri, experiment_name(spec))
    keys = [run.data.tags["trial_key"] for run in runs]
    assert len(keys) == len(set(keys)) == len(expand(spec)), keys  # one run per trial key
    for run in runs:
        assert run.info.status == "FINISHED" and run.data.tags["gatelab.status"] == Status.FINISHED, run.info
        assert_history_complete(client, run.info.run_id, max_steps)  # every step once: none lost, none twice
        assert PROBES in {a.path for a in client.list_artifacts(run.info.run_id)}


@pytest.mark.ray
@pytest.mark.slow
def test_driver_restarts_a_killed_server_and_no_step_is_lost_or_doubled(tmp_path):
    home = tmp_path / "home"
    grid = write_grid(
        tmp_path / "grid.yaml", "outage", ["baseline", "g1_elementwise_sigmoid"], max_steps=MAX_STEPS,
        checkpoint_every=10,
    )  # fmt: skip
    store = Store(home)
    proc = gatelab("submit", str(grid), home=home)
    try:
        wait_for(lambda: _checkpoints(store.checkpoints_dir), 600, what="a first checkpoint")
        killed = _kill_server(store)
        out, _ = proc.communicate(timeout=900)
    finally:
        kill_group(proc)
    assert proc.returncode == 0, out
    assert "was gone; started it again" in out, out
    info = running_server(store)
    assert info is not None and info.pid != killed
    spec = load_grid(grid)
    _assert_ended_once_each(info.uri, spec, MAX_STEPS)
    assert not list(store.checkpoints_dir.glob(f"*/{JOURNAL}"))  # everything arrived while it ran
    stop_server(store)


def test_trial_ending_while_the_server_is_away_is_caught_up_by_status(tmp_path, monkeypatch, capsys):
    """No driver to restart the server: the worker's trial finishes anyway, keeps its last operations in its
    journal, and `gatelab status` sends them."""
    from gatelab.grid.dispatch.worker import run_grid_trial

    monkeypatch.setenv("GATELAB_SERVER_WAIT_S", "1")
    home = tmp_path / "home"
    grid = write_grid(
        tmp_path / "grid.yaml", "away", ["g1_elementwise_sigmoid"], max_steps=MAX_STEPS, checkpoint_every=10
    )
    spec = load_grid(grid)
    (trial,) = expand(spec)
    store = Store(home).ensure()
    info, _ = ensure_server(store)
    parent = ensure_parent_run(info.uri, experiment_name(spec), spec.name, {}, store.locks_dir)
    job = job_for(spec, store, info.uri, parent, trial)
    trial_dir = Path(job.checkpoint_root) / trial.key

    def kill_after_first_checkpoint() -> None:
        wait_for(lambda: list(trial_dir.glob("checkpoints/*.ckpt")), 600, what="a first checkpoint")
        _kill_server(store)

    killer = threading.Thread(target=kill_after_first_checkpoint)
    killer.start()
    result = run_grid_trial(job)  # in this process, as a Ray worker runs it
    killer.join()
    assert result.status == Status.FINISHED, result.error
    journal = TrialFolder(trial_dir).journal
    assert journal.exists()
    assert '"status": "FINISHED"' in journal.read_text()  # the run's end waits on disk

    capsys.readouterr()
    assert main(["status", str(grid), "--home", str(home), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["status"] == Status.FINISHED and row["step"] == MAX_STEPS
    assert not journal.exists()
    revived = running_server(store)
    _assert_ended_once_each(revived.uri, spec, MAX_STEPS)
    client = MlflowClient(revived.uri)
    assert "plots" in {a.path for a in client.list_artifacts(row["run_id"])}
    stop_server(store)


@pytest.mark.ray
def test_ctrl_c_stops_a_driver_whose_server_is_gone(tmp_path):
    home = tmp_path / "home"
    grid = write_grid(tmp_path / "grid.yaml", "ctrlc", ["baseline"], max_steps=400, checkpoint_every=10)
    store = Store(home)
    proc = gatelab("submit", str(grid), home=home)
    try:
        wait_for(lambda: _checkpoints(store.checkpoints_dir), 600, what="a first checkpoint")
        os.killpg(proc.pid, signal.SIGSTOP)  # hold the driver so that it cannot restart the server first
        _kill_server(store)
        os.killpg(proc.pid, signal.SIGCONT)
        os.kill(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        kill_group(proc)
    assert proc.returncode == 130, out
    assert "interrupted" in out, out
    stop_server(store)


def test_full_outbox_makes_logging_wait_for_the_server_and_nothing_is_lost(tmp_path):
    from gatelab.tracking.runs.mlflow_tracker import MlflowTracker
    from gatelab.tracking.server.process import revive_server

    store = Store(tmp_path / "home").ensure()
    info, _ = ensure_server(store)
    journal = TrialFolder(tmp_path / "trial").journal
    tracker = MlflowTracker.create(info.uri, "bounded", journal=journal, max_buffered_metrics=50, flush_interval_s=0.2)
    _kill_server(store)
    logged = threading.Event()

    def log_beyond_the_bound() -> None:
        for step in range(100):  # two metrics a step: the outbox fills at step 25
            tracker.log_metrics({"loss": float(step), "lr": 1e-3}, step)
        logged.set()

    logger = threading.Thread(target=log_beyond_the_bound, daemon=True)
    logger.start()
    wait_for(journal.exists, 60, what="the full outbox to be kept in the journal")
    assert not logged.wait(3.0)  # logging waits while the server is away and the outbox is full
    assert 50 <= tracker._outbox.metrics < 60
    assert revive_server(store, info.uri)
    logger.join(timeout=120)
    assert logged.is_set()
    tracker.set_status(Status.FINISHED)
    client = MlflowClient(info.uri)
    for key in ("loss", "lr"):
        assert sorted(m.step for m in client.get_metric_history(tracker.run_id, key)) == list(range(100))
    assert not journal.exists()
    stop_server(store)
