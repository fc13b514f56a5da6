"""Faults a real grid meets, injected for real: a damaged newest checkpoint, and SIGTERM (a spot notice,
`ray stop`) or Ctrl-C during training."""

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from gatelab.tracking.store import Store
from gatelab.trainer.checkpoint import damage_of, list_checkpoints
from gatelab.trainer.config.trial import CheckpointConfig, EvalConfig, ModelChoice, ScheduleConfig, TrialConfig
from gatelab.trainer.config.trial_folder import TrialFolder
from gatelab.trainer.run import run_trial
from gatelab.trainer.tracker import InMemoryTracker

from grid_helpers import GATELAB_COMMAND

ROOT = Path(__file__).resolve().parents[1]
CONFIG = TrialConfig(
    variant="g1_elementwise_sigmoid",
    seed=11,
    model=ModelChoice(preset="tiny"),
    schedule=ScheduleConfig(max_steps=12, batch_size=4, log_every=1),
    eval=EvalConfig(every=6, batches=1, long_context_factors=(1,)),
    checkpoint=CheckpointConfig(every=4, keep_last=3),
)


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[:1000])
    elif how == "empty":
        path.write_bytes(b"")
    else:  # a flipped run of bytes in the middle: the archive opens, a member's CRC does not match
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 64]) + data[middle + 64 :])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """An uninterrupted run of CONFIG: its directory and its metrics."""
    work = tmp_path_factory.mktemp("reference")
    tracker = InMemoryTracker()
    result = run_trial(CONFIG, tracker, work / "trial", work / "cache")
    return work, tracker, result


def _crashed_copy(finished, tmp_path: Path) -> Path:
    """The finished trial as a process that died after step 10 leaves it: no final checkpoint (step 12)."""
    work, _, _ = finished
    shutil.copytree(work / "trial", tmp_path / "trial")
    (TrialFolder(tmp_path / "trial").checkpoints / "step-00000012.ckpt").unlink()
    return tmp_path / "trial"


@pytest.mark.parametrize("how", ["truncated", "empty", "corrupted"])
def test_a_damaged_newest_checkpoint_is_set_aside_and_the_trial_resumes_from_the_one_before(
    finished, tmp_path, how, capfd
):
    trial = _crashed_copy(finished, tmp_path)
    newest = TrialFolder(trial).checkpoints / "step-00000008.ckpt"
    _damage(newest, how)
    assert damage_of(newest) is not None
    tracker = InMemoryTracker()
    result = run_trial(CONFIG, tracker, trial, finished[0] / "cache")
    assert result.status == "finished"
    assert (TrialFolder(trial).checkpoints / "step-00000008.ckpt.damaged").exists()  # kept, renamed
    assert [step for step, _ in list_checkpoints(TrialFolder(trial).checkpoints)][-1] == 12
    warned = capfd.readouterr().err
    assert warned.count("step-00000008.ckpt is damaged") == 1 and "set aside" in tracker.tags["gatelab.warning"]
    # resumed from step 4: steps 5..12 again, the same numbers as the uninterrupted run (CPU: exact)
    _, reference, expected = finished
    assert [s for s, _ in tracker.metrics["train_loss"]] == list(range(5, 13))
    assert tracker.metrics["train_loss"] == [(s, v) for s, v in reference.metrics["train_loss"] if s > 4]
    assert result.summary["final_val_loss"] == expected.summary["final_val_loss"]


def test_with_no_readable_checkpoint_the_trial_starts_over_and_says_so(finished, tmp_path, capfd):
    trial = _crashed_copy(finished, tmp_path)
    for _, path in list_checkpoints(TrialFolder(trial).checkpoints):
        _damage(path, "truncated")
    tracker = InMemoryTracker()
    result = run_trial(CONFIG, tracker, trial, finished[0] / "cache")
    assert result.status == "finished" and [s for s, _ in tracker.metrics["train_loss"]] == list(range(1, 13))
    assert "starts over from step 0" in capfd.readouterr().err
    assert len(list(TrialFolder(trial).checkpoints.glob("*.damaged"))) == 2


def _train(home: Path, *sets: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*GATELAB_COMMAND, "train", "tiny_trial", "--home", str(home), *sets],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.mlflow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_gatelab_train_saves_the_step_and_a_rerun_continues_from_it(tmp_path, sig):
    from mlflow.tracking import MlflowClient

    from grid_helpers import assert_history_complete

    home = tmp_path / "home"
    # Long enough to still be training 4 s in on a fast, idle machine (~100 steps/s), with no checkpoint before.
    sets = ["--set", "schedule.max_steps=2000", "--set", "checkpoint.every=5000", "--set", "eval.every=500"]
    sets += ["--set", f"seed={40 + sig}"]
    proc = _train(home, *sets)
    checkpoints = None
    deadline = time.time() + 180
    while time.time() < deadline:  # training has begun once the run logs steps
        time.sleep(1)
        store = Store(home)
        dirs = list(store.checkpoints_dir.glob("*")) if store.checkpoints_dir.exists() else []
        if dirs and any(store.artifacts_dir.rglob("config.yaml")):
            checkpoints = TrialFolder(dirs[0]).checkpoints
            break
    time.sleep(4)  # some steps in
    sent = time.time()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert time.time() - sent < 30, "it did not stop promptly"
    assert proc.returncode == 128 + sig, (proc.returncode, out[-2000:], err[-2000:])
    assert "preempted by" in err and "rerun the same command" in err
    saved = [step for step, _ in list_checkpoints(checkpoints)]
    assert len(saved) == 1 and 0 < saved[0] < 2000  # the step it was on, not an interval's
    client = MlflowClient(tracking_uri=f"sqlite:///{home}/mlflow.db")
    [run] = client.search_runs([client.get_experiment_by_name("gatelab-train").experiment_id])
    assert run.data.tags["gatelab.status"] == "preempted"
    again = _train(home, *sets)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-2000:]
    assert "resuming trial" in out
    run = client.get_run(run.info.run_id)
    assert run.data.tags["gatelab.status"] == "finished"
    assert_history_complete(client, run.info.run_id, 2000)
    assert os.path.exists(checkpoints)


@pytest.fixture
def small_disk(tmp_path):
    """A size-limited filesystem (tmpfs), mounted for the test and gone after it; a skip where mounting is
    not allowed (not root, or a container without the capability)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()

    def resize(size_bytes: int, remount: bool = False) -> None:
        options = f"{'remount,' if remount else ''}size={size_bytes}"
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a size-limited tmpfs here: {done.stderr.decode().strip()}")

    yield mount, resize
    subprocess.run(["umount", str(mount)], capture_output=True)


def test_a_full_disk_fails_the_checkpoint_cleanly_and_a_resume_continues_after_space_is_freed(finished, small_disk):
    from gatelab.grid.dispatch.failures import failure_reason
    from gatelab.trainer.config.outcome import DiskFull

    work, reference, expected = finished
    size = (TrialFolder(work / "trial").checkpoints / "step-00000004.ckpt").stat().st_size
    mount, resize = small_disk
    resize(int(size * 2.5))  # room for two checkpoints (steps 4 and 8), not the third
    trial = mount / "trial"
    with pytest.raises(DiskFull) as raised:
        run_trial(CONFIG, InMemoryTracker(), trial, work / "cache")
    assert failure_reason(raised.value).startswith("disk_full: no space left")
    checkpoints = TrialFolder(trial).checkpoints
    assert [step for step, _ in list_checkpoints(checkpoints)] == [4, 8]
    assert all(damage_of(path) is None for _, path in list_checkpoints(checkpoints))  # the older ones intact
    assert not list(checkpoints.glob(".*tmp*"))  # no temporary file left behind
    resize(int(size * 6), remount=True)  # space freed
    tracker = InMemoryTracker()
    result = run_trial(CONFIG, tracker, trial, work / "cache")
    assert result.status == "finished" and [s for s, _ in tracker.metrics["train_loss"]] == list(range(9, 13))
    assert tracker.metrics["train_loss"] == [(s, v) for s, v in reference.metrics["train_loss"] if s > 8]
    assert result.summary["final_val_loss"] == expected.summary["final_val_loss"]
