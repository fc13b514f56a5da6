"""The chaos soak (`gatelab bench chaos`): its checks catch each kind of damage, its chaos thread signals only the
trial workers of its own driver, with choices its seed fixes, and a small soak on a real local Ray and MLflow
server holds every check."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from gatelab.grid.bench.chaos import TRIAL_TASK_TITLE, Chaos, trainer_loaded, trial_key_of, trial_workers
from gatelab.grid.bench.soak_checks import LOSS_TOLERANCE, GridLedger, compare
from gatelab.tracking.runs.ledger import TrialRecord
from gatelab.trainer.config.trial_folder import TrialFolder


def _record(run_id: str, status: str = "finished", attempt: int = 1) -> TrialRecord:
    return TrialRecord(run_id, status, {}, {}, 0, None, attempt)


def _ledger(keys=("a", "b"), steps=4, **changes) -> GridLedger:
    """Two finished trials, each with a train_loss at every step and a val_loss at the last."""
    runs = {key: [_record(f"run-{key}")] for key in keys}
    history = {
        key: {"train_loss": [(s, 5.0 - s / 10) for s in range(1, steps + 1)], "val_loss": [(steps, 4.2)]}
        for key in keys
    }
    for key, change in changes.items():
        change(runs, history)
    return GridLedger(runs, history)


def test_an_identical_ledger_holds_every_check():
    assert compare(_ledger(), _ledger(), ["a", "b"]).count() == 0


@pytest.mark.parametrize(
    "damage, kinds",
    [
        (lambda runs, history: runs["a"].append(_record("run-a2")), {"duplicated_runs"}),
        (lambda runs, history: history["a"]["train_loss"].insert(2, (2, 4.8)), {"duplicated_steps"}),
        (lambda runs, history: history["a"]["train_loss"].pop(1), {"missing_steps"}),
        (lambda runs, history: history["b"]["val_loss"].append((5, 4.2)), {"extra_steps"}),
        (lambda runs, history: runs.__setitem__("b", [_record("run-b", status="running")]), {"lost"}),
        # an absent trial has no history either: every step is missing and so is its final loss
        (lambda runs, history: (runs.pop("b"), history.pop("b")), {"lost", "missing_steps", "loss_mismatches"}),
        (
            lambda runs, history: history["a"]["val_loss"].__setitem__(0, (4, 4.2 + 3 * LOSS_TOLERANCE)),
            {"loss_mismatches"},
        ),
    ],
    ids=["run", "step", "missing", "extra", "unfinished", "absent", "loss"],
)
def test_each_kind_of_damage_is_found_and_nothing_else(damage, kinds):
    found = compare(_ledger(damage=damage), _ledger(), ["a", "b"])
    assert {name for name, cases in found.__dict__.items() if cases} == kinds, found


def test_a_loss_within_the_tolerance_is_equal():
    def nudge(runs, history):
        history["a"]["val_loss"][0] = (4, 4.2 + LOSS_TOLERANCE / 2)

    assert compare(_ledger(nudge=nudge), _ledger(), ["a", "b"]).count() == 0


def test_an_undisturbed_run_that_did_not_finish_spoils_the_soak():
    def unfinished(runs, history):
        runs["a"] = [_record("run-a", status="failed")]

    assert compare(_ledger(), _ledger(unfinished=unfinished), ["a", "b"]).reference


def test_retries_count_the_starts_after_the_first():
    assert GridLedger({"a": [_record("r", attempt=3)], "b": [_record("s")]}, {}).retries() == 2


def _fake_workers(n: int, root: Path) -> list[subprocess.Popen]:
    """Children of this process titled as Ray titles a worker running a trial (bash's `exec -a`), each holding
    its own trial's lock file open, as a real one does."""
    title = TRIAL_TASK_TITLE.decode()
    workers = []
    for index in range(n):
        lock = TrialFolder(root / f"trial{index}").lock
        lock.parent.mkdir(parents=True, exist_ok=True)
        workers.append(subprocess.Popen(["bash", "-c", f'exec 9>"$0"; exec -a {title} sleep 120', str(lock)]))
    for proc in workers:  # until bash has become the titled `sleep` (argv[0] is the title), lock open
        cmdline = Path("/proc") / str(proc.pid) / "cmdline"
        while not cmdline.read_bytes().startswith(TRIAL_TASK_TITLE):
            assert proc.poll() is None, "a fake worker ended before its title was set"
            time.sleep(0.01)
    return workers


def test_trial_workers_are_the_titled_descendants_of_the_driver(tmp_path):
    workers, other = _fake_workers(2, tmp_path), subprocess.Popen(["sleep", "120"])
    try:
        assert set(trial_workers(os.getpid())) >= {w.pid for w in workers}
        assert [trial_key_of(w.pid) for w in workers] == ["trial0", "trial1"]
        assert other.pid not in trial_workers(os.getpid())
        assert not set(trial_workers(other.pid)) & {w.pid for w in workers}  # not under that "driver"
    finally:
        for proc in (*workers, other):
            proc.kill()
            proc.wait()


def test_a_process_past_importing_torch_is_training_and_a_fresh_one_is_not():
    fresh = subprocess.Popen(["sleep", "120"])
    try:
        assert trainer_loaded(os.getpid())  # pytest: conftest imports torch
        assert not trainer_loaded(fresh.pid)
    finally:
        fresh.kill()
        fresh.wait()


def _signals_sent(seed: int, root: Path) -> list[str]:
    workers = _fake_workers(3, root / str(seed))
    try:
        steps = {"trial0": 4, "trial1": None, "trial2": 9}
        # trial1's worker is importing while the others live: until then only moments that may pick any worker
        # pick it
        importing, others = workers[1].pid, (workers[0], workers[2])
        chaos = Chaos(
            os.getpid(),
            steps.get,
            kills=3,
            seed=seed,
            gap_s=(0.0, 0.01),
            sigterm_share=0.5,
            is_training=lambda pid: pid != importing or all(w.poll() is not None for w in others),
        ).start()
        chaos.wait(timeout_s=60)
        kills = chaos.stop()
        codes = sorted(-proc.wait(timeout=30) for proc in workers)
    finally:
        for proc in workers:
            proc.kill()
            proc.wait()
    # Each worker ended by the signal the chaos says it sent (SIGKILL 9, SIGTERM 15).
    assert codes == sorted({"SIGKILL": 9, "SIGTERM": 15}[kill.signal] for kill in kills), (codes, kills)
    assert sorted(kill.key for kill in kills) == ["trial0", "trial1", "trial2"]  # each worker once, by its trial
    assert all(kill.step == steps[kill.key] for kill in kills)
    assert all(kill.training == (kill.key != "trial1" or n == 2) for n, kill in enumerate(kills)), kills
    return [kill.signal for kill in kills]


def test_the_chaos_signals_as_many_workers_as_asked_with_the_choices_its_seed_fixes(tmp_path):
    first, again, other = (_signals_sent(seed, tmp_path / str(n)) for n, seed in enumerate((3, 3, 4)))
    assert len(first) == 3 and first == again
    assert {"SIGKILL", "SIGTERM"} <= set(first + other)  # both signals are drawn at a share of 0.5


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.mlflow
def test_a_small_soak_finishes_every_trial_once_with_complete_histories_and_the_undisturbed_losses():
    from gatelab.grid.bench.chaos_soak import bench_chaos

    result = bench_chaos(trials=6, kills=3, seed=1, steps=60, sigterm_share=0.25)
    assert result["trials"] == 6 and result["kills"] >= 1 and result["retries"] >= 1, result
    assert result["violations"] == 0, result["violation_lines"]
    assert result["lost"] == result["duplicated_runs"] == result["duplicated_steps"] == result["missing_steps"] == 0
    assert result["max_loss_difference"] <= 1e-5
