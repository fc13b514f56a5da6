"""Compiled training (`compile: true`, torch.compile of the training step) on the CPU: its checkpoints hold the
eager model's keys and load into an eager run and back, and a resumed compiled run equals an uninterrupted
one. (On CUDA the same runs by default; tests/test_gpu.py.)"""

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from gatelab.trainer.config.trial import CheckpointConfig, EvalConfig, ScheduleConfig, TrialConfig
from gatelab.trainer.config.trial_folder import TrialFolder
from gatelab.trainer.lightning_module import GatedLMModule
from gatelab.trainer.run import run_trial
from gatelab.trainer.tracker import InMemoryTracker

pytestmark = [pytest.mark.slow]

CONFIG = TrialConfig(
    variant="g1_elementwise_sigmoid",
    compile=True,
    schedule=ScheduleConfig(max_steps=20, batch_size=8, log_every=1),
    eval=EvalConfig(every=10, batches=2, long_context_factors=(1,)),
    checkpoint=CheckpointConfig(every=10, keep_last=2),
)


def _train(config: TrialConfig, trial_dir: Path, cache: Path):
    tracker = InMemoryTracker()
    return run_trial(config, tracker, trial_dir, cache), tracker


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    home = tmp_path_factory.mktemp("compiled")
    result, tracker = _train(CONFIG, home / "trial", home / "cache")
    return result, tracker, home


def test_compile_is_off_on_cpu_and_on_with_cuda_by_default():
    assert TrialConfig().compiled_on(cuda=True) and not TrialConfig().compiled_on(cuda=False)
    assert TrialConfig(compile=True).compiled_on(cuda=False) and not TrialConfig(compile=False).compiled_on(True)


def test_the_compiled_run_logs_that_it_was_compiled(uninterrupted):
    result, tracker, _ = uninterrupted
    assert result.status == "finished" and tracker.tags["compiled"] == "true"


def test_compiled_checkpoints_hold_eager_keys_and_load_into_an_eager_module(uninterrupted):
    _, _, home = uninterrupted
    newest = sorted(TrialFolder(home / "trial").checkpoints.glob("*.ckpt"))[-1]
    state = torch.load(newest, weights_only=True)["state_dict"]
    assert not [key for key in state if "_orig_mod" in key]
    eager = GatedLMModule(replace(CONFIG, compile=False))
    eager.load_state_dict(state, strict=True)
    assert set(eager.state_dict()) == set(state)


def _drop_newest_checkpoint(trial_dir: Path) -> None:
    """As if the process died between the last two checkpoints (the one at the end never written)."""
    newest = sorted(TrialFolder(trial_dir).checkpoints.glob("*.ckpt"))[-1]
    newest.unlink()


def test_a_resumed_compiled_run_equals_the_uninterrupted_one(uninterrupted, tmp_path):
    reference, reference_tracker, home = uninterrupted
    shutil.copytree(home / "trial", tmp_path / "trial")
    _drop_newest_checkpoint(tmp_path / "trial")
    resumed, tracker = _train(CONFIG, tmp_path / "trial", home / "cache")
    steps = [step for step, _ in tracker.metrics["train_loss"]]
    assert steps == list(range(11, 21))  # continued from step 10, not from the start
    expected = dict(reference_tracker.metrics["train_loss"])
    for step, value in tracker.metrics["train_loss"]:
        assert value == pytest.approx(expected[step], rel=1e-5), step
    assert resumed.summary["final_val_loss"] == pytest.approx(reference.summary["final_val_loss"], rel=1e-5)


def test_an_eager_run_resumes_from_a_compiled_checkpoint(uninterrupted, tmp_path):
    reference, reference_tracker, home = uninterrupted
    shutil.copytree(home / "trial", tmp_path / "trial")
    _drop_newest_checkpoint(tmp_path / "trial")
    # The run's params as MLflow keeps them: switching compile off must not change one (they are immutable).
    tracker = InMemoryTracker()
    tracker.params = dict(reference_tracker.params)
    resumed = run_trial(replace(CONFIG, compile=False), tracker, tmp_path / "trial", home / "cache")
    assert tracker.tags["compiled"] == "false" and tracker.metrics["train_loss"][0][0] == 11
    # Same weights and data from step 10; eager and compiled kernels differ only in rounding.
    assert resumed.summary["final_val_loss"] == pytest.approx(reference.summary["final_val_loss"], rel=1e-3)
