"""One trial end to end on the tiny preset, with the in-memory tracker."""

import math

import numpy as np
import pytest

from gatelab.trainer.config.trial import CheckpointConfig, EvalConfig, ScheduleConfig, TrialConfig
from gatelab.trainer.config.trial_folder import PROBES, TrialFolder
from gatelab.trainer.corpus import DataConfig
from gatelab.trainer.model.lm import GatedLM
from gatelab.trainer.run import run_trial
from gatelab.trainer.tracker import InMemoryTracker


def tiny(**changes) -> TrialConfig:
    base = dict(
        variant="g1_elementwise_sigmoid",
        schedule=ScheduleConfig(max_steps=40, batch_size=8, log_every=1),
        eval=EvalConfig(every=10, batches=2, long_context_factors=(1, 2)),
        checkpoint=CheckpointConfig(every=10, keep_last=2),
    )
    return TrialConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    home = tmp_path_factory.mktemp("trial")
    tracker = InMemoryTracker()
    result = run_trial(tiny(), tracker, home / "trial", home / "cache")
    return result, tracker, home


def test_loss_falls_on_the_embedded_corpus(finished):
    result, tracker, _ = finished
    losses = [loss for _, loss in tracker.metrics["train_loss"]]
    assert result.status == "finished" and tracker.status == "finished"
    assert losses[0] == pytest.approx(math.log(258), rel=0.1)
    assert sum(losses[-5:]) / 5 < losses[0] - 1.5  # falls well below uniform within 40 steps
    vals = [v for _, v in tracker.metrics["val_loss"]]
    assert vals == sorted(vals, reverse=True)


def test_summary_metrics_params_tags_and_artifacts(finished):
    result, tracker, home = finished
    for key in (
        "final_val_loss",
        "final_val_ppl",
        "spike_count",
        "max_spike_ratio",
        "f_attn",
        "m_act",
        "gate_mean",
        "sink_eps",
    ):
        assert key in result.summary and key in tracker.metrics, key
    assert result.summary["final_val_ppl"] == pytest.approx(math.exp(result.summary["final_val_loss"]))
    assert 0 < result.summary["gate_mean"] < 1
    assert {"long_ppl_x1_rope", "long_ppl_x2_yarn"} <= set(tracker.metrics)
    assert tracker.params["optim.lr"] == 3e-3 and len(tracker.params["data.fingerprint"]) >= 12
    assert tracker.tags["gate_position"] == "g1" and tracker.tags["variant"] == "g1_elementwise_sigmoid"
    assert tracker.tags["paper_ref"] == "Table 1 row 5" and tracker.tags["gatelab.status"] == "finished"
    names = sorted(p.name for p, _ in tracker.artifacts)
    assert names == [
        "config.yaml",
        "environment.json",
        "f_attn_per_layer.png",
        "gate_histogram.png",
        "long_context.png",
        "loss_curve.png",
        PROBES,
    ]
    checkpoints = sorted(p.name for p in TrialFolder(home / "trial").checkpoints.iterdir())
    assert checkpoints == ["step-00000030.ckpt", "step-00000040.ckpt"]  # last K=2 kept
    steps = [s for s, _ in tracker.metrics["train_loss"]]
    assert steps == list(range(1, 41))


def test_every_metric_is_logged_at_most_once_per_step(finished):
    # The final probe summary (f_attn, sink_eps, m_act, gate_mean) used to be logged twice at the last step.
    _, tracker, _ = finished
    assert {"f_attn", "sink_eps", "m_act", "gate_mean", "final_val_loss"} <= set(tracker.metrics)
    for key, points in tracker.metrics.items():
        steps = [step for step, _ in points]
        assert steps == sorted(set(steps)), key


def test_injected_nan_ends_as_diverged_with_metrics_kept(tmp_path, monkeypatch):
    original = GatedLM.loss
    calls = []

    def nan_at_step_25(self, inputs_BT, targets_BT):
        calls.append(1)
        total, parts = original(self, inputs_BT, targets_BT)
        return (total * float("nan"), parts) if len(calls) == 25 else (total, parts)

    monkeypatch.setattr(GatedLM, "loss", nan_at_step_25)
    tracker = InMemoryTracker()
    result = run_trial(tiny(), tracker, tmp_path / "trial", tmp_path / "cache")
    assert result.status == "diverged" and tracker.tags["gatelab.status"] == "diverged"
    steps = [s for s, _ in tracker.metrics["train_loss"]]
    assert steps == list(range(1, 26)) and math.isnan(tracker.metrics["train_loss"][-1][1])
    assert [s for s, _ in tracker.metrics["val_loss"]] == [10, 20]
    assert result.summary["diverged_at_step"] == 25
    assert result.summary["final_val_loss"] == tracker.metrics["val_loss"][-1][1]


def test_user_text_file_and_nanogpt_bin_both_train(tmp_path):
    text = tmp_path / "book.txt"
    text.write_text("It was the best of times, it was the worst of times. " * 400)
    tokens = np.random.default_rng(0).integers(0, 200, 40_000).astype(np.uint16)
    tokens.tofile(tmp_path / "tokens.bin")
    for source in (str(text), str(tmp_path / "tokens.bin")):
        tracker = InMemoryTracker()
        config = tiny(
            data=DataConfig(source=source, val_percent=10),
            schedule=ScheduleConfig(max_steps=12, batch_size=4, log_every=1),
            eval=EvalConfig(every=6, batches=1, long_context_factors=(1,)),
        )
        result = run_trial(config, tracker, tmp_path / f"trial-{source.split('/')[-1]}", tmp_path / "cache")
        assert result.status == "finished"
        losses = [v for _, v in tracker.metrics["train_loss"]]
        assert losses[-1] < losses[0]


def test_missing_data_is_an_error_before_anything_is_logged(tmp_path):
    from gatelab.trainer.corpus import DataError

    tracker = InMemoryTracker()
    with pytest.raises(DataError, match="nope"):
        run_trial(tiny(data=DataConfig(source=str(tmp_path / "nope.txt"))), tracker, tmp_path / "t", tmp_path / "c")
    assert not tracker.params and not tracker.metrics and not (tmp_path / "t").exists()


def test_the_environment_record_is_taken_once_per_process(monkeypatch):
    from gatelab.trainer import environment

    calls = []
    monkeypatch.setattr(environment, "git_sha", lambda: calls.append(1) or "abc123")
    environment._process_environment.cache_clear()
    first = environment.environment_record()
    first["packages"]["torch"] = "edited by a caller"
    second = environment.environment_record()
    environment._process_environment.cache_clear()
    assert calls == [1] and second["git_sha"] == "abc123" and second["packages"]["torch"] != "edited by a caller"


def test_a_resume_may_change_how_the_trial_runs(tmp_path):
    # Checkpoint cadence, name, logging cadence: outside the key, so a rerun with new ones resumes the same
    # trial; they are tags (the latest attempt's), because MLflow never lets a param change.
    first = InMemoryTracker()
    run_trial(
        tiny(schedule=ScheduleConfig(max_steps=20, batch_size=8, log_every=1)),
        first,
        tmp_path / "t",
        tmp_path / "cache",
    )
    sorted(TrialFolder(tmp_path / "t").checkpoints.glob("*.ckpt"))[-1].unlink()  # died between step 10 and 20
    again = InMemoryTracker()
    again.params = dict(first.params)  # the run's params as MLflow keeps them; changing one would raise
    changed = tiny(
        name="renamed",
        schedule=ScheduleConfig(max_steps=20, batch_size=8, log_every=2),
        checkpoint=CheckpointConfig(every=5, keep_last=3),
    )
    result = run_trial(changed, again, tmp_path / "t", tmp_path / "cache")
    assert result.status == "finished" and again.metrics["train_loss"][0][0] == 12
    assert again.tags["setting.checkpoint.every"] == "5" and again.tags["setting.name"] == "renamed"
    assert not [key for key in first.params if key.startswith(("checkpoint.", "name", "schedule.log_every"))]
