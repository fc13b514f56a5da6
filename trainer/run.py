"""run_trial: one trial from config to results, resumable from its newest checkpoint.

The caller passes a Tracker (MLflow in production, in-memory in tests) and a trial directory; nothing
here knows about Ray, MLflow or Optuna.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import torch
import yaml

from gatelab.trainer import plots
from gatelab.trainer.checkpoint import AtomicCheckpointIO, newest_readable_checkpoint
from gatelab.trainer.config.metric_names import (
    DIVERGED_AT_STEP,
    F_ATTN,
    FINAL_VAL_LOSS,
    FINAL_VAL_PPL,
    GATE_MEAN,
    M_ACT,
    SINK_EPS,
)
from gatelab.trainer.config.outcome import Status, TrialPreempted, TrialResult
from gatelab.trainer.config.run_tags import GATE_HIST_TAG, WARNING_TAG
from gatelab.trainer.config.trial import TrialConfig, is_run_setting, run_tags, to_dict
from gatelab.trainer.config.trial_folder import TrialFolder
from gatelab.trainer.data import build_datasets
from gatelab.trainer.environment import environment_record
from gatelab.trainer.evaluate import long_context, mean_loss, perplexity, probe
from gatelab.trainer.lightning_module import GatedLMModule, TrialDataModule
from gatelab.trainer.preemption import NoteSigterm
from gatelab.trainer.tracker import Tracker
from gatelab.trainer.trial_callback import TrialReporter


@dataclass(frozen=True)
class Launch:
    """How Lightning runs when a caller distributes the trial (e.g. Ray Train's DDP workers). The trainer
    library stays free of Ray: the caller passes the strategy and plugins it built."""

    strategy: object
    """A Lightning strategy instance (e.g. ray.train.lightning.RayDDPStrategy())."""
    plugins: tuple = ()
    """Extra Lightning plugins (e.g. the cluster environment)."""
    prepare: object = None
    """Called with the pl.Trainer before fit (e.g. ray.train.lightning.prepare_trainer)."""
    rank_zero: bool = True
    """Only rank zero writes the trial's files; every rank shares its checkpoints."""


def flatten(data: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _record_start(config: TrialConfig, tracker: Tracker, splits, trial_dir: Path, cuda: bool) -> None:
    everything = flatten(to_dict(config))
    params = {key: value for key, value in everything.items() if not is_run_setting(key)}
    # How this attempt runs may differ from the last one's (a GPU trial resumed on a CPU, a new checkpoint
    # cadence): tags, which the latest attempt overwrites, not params, which MLflow never lets change.
    how = {f"setting.{key}": str(value) for key, value in everything.items() if is_run_setting(key)}
    how.update({"compiled": str(config.compiled_on(cuda)).lower(), "precision": config.precision_on(cuda)})
    params.update(
        {
            "data.fingerprint": splits.fingerprint,
            "data.train_tokens": splits.train_tokens,
            "data.val_tokens": splits.val_tokens,
            "seq_len": config.seq_len,
            "tokens_per_step": config.tokens_per_step,
        }
    )
    tracker.log_params(params)
    tracker.set_tags({**run_tags(config), **how})
    tracker.set_status(Status.RUNNING)
    config_file = trial_dir / "config.yaml"
    config_file.write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    env_file = trial_dir / "environment.json"
    env_file.write_text(json.dumps(environment_record(), indent=1))
    tracker.log_artifact(config_file)
    tracker.log_artifact(env_file)


def _finish(config, tracker, module, reporter, splits, trial_dir: Path, step: int, diverged: bool) -> dict:
    """Final evaluation, probes, long-context, summary, plots. Returns the summary metrics."""
    summary = dict(reporter.spikes.summary())
    plot_dir = trial_dir / "plots"
    plot_dir.mkdir(exist_ok=True)
    title = f"{config.variant} seed {config.seed} lr {config.optim.lr:g}"
    figures = [
        plots.loss_curve(
            reporter.train_curve, reporter.val_curve, reporter.spikes.spikes, title, plot_dir / "loss_curve.png"
        )
    ]
    if not diverged:
        val_loss = mean_loss(module.model, reporter.val_batches)
        summary.update({FINAL_VAL_LOSS: val_loss, FINAL_VAL_PPL: perplexity(val_loss)})
        report = probe(module.model, reporter.probe_batches)
        summary.update({F_ATTN: report.f_attn, M_ACT: report.m_act, SINK_EPS: report.sink_eps})
        if report.gate_mean is not None:
            summary[GATE_MEAN] = report.gate_mean
        ev = config.eval
        longctx = long_context(
            module.model,
            splits,
            config.seq_len,
            ev.long_context_factors,
            ev.long_context_batches,
            ev.long_context_max_tokens,
        )
        reporter.record({**report.to_metrics(), **longctx}, step)
        TrialFolder(trial_dir).probes.write_text(json.dumps(report.to_dict(), indent=1))
        if report.gate_hist_counts:
            tracker.set_tags({GATE_HIST_TAG: json.dumps(report.gate_hist_counts)})
        figures.append(plots.f_attn_per_layer(report, title, plot_dir / "f_attn_per_layer.png"))
        if report.gate_mean is not None:
            figures.append(plots.gate_histogram(report, title, plot_dir / "gate_histogram.png"))
        if longctx:
            figures.append(plots.long_context_curve(longctx, config.seq_len, title, plot_dir / "long_context.png"))
        tracker.log_artifact(TrialFolder(trial_dir).probes)
    else:
        val_loss = reporter.val_curve[-1][1] if reporter.val_curve else float("nan")
        summary.update(
            {
                FINAL_VAL_LOSS: val_loss,
                FINAL_VAL_PPL: perplexity(val_loss) if math.isfinite(val_loss) else float("nan"),
                DIVERGED_AT_STEP: float(step),
            }
        )
    reporter.record(summary, step)
    for figure in figures:
        tracker.log_artifact(figure, "plots")
    return summary


def _warn(tracker: Tracker, text: str) -> None:
    """A problem the trial recovered from: on stderr (a grid's worker log) and as a tag of the run."""
    print(f"gatelab: warning: {text}", file=sys.stderr, flush=True)
    tracker.set_tags({WARNING_TAG: text[:500]})


def _quiet_lightning() -> None:
    """Lightning's start-up banners and a deprecation inside its own pytree helper say nothing about the
    trial; with many trials per grid they bury the progress lines."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")


def run_trial(
    config: TrialConfig,
    tracker: Tracker,
    trial_dir: Path,
    cache_dir: Path,
    progress: bool = False,
    callbacks: tuple = (),
    launch: Launch | None = None,
    reuse_data: bool = False,
) -> TrialResult:
    """Train (or resume) one trial. Data errors raise before anything is logged or trained.
    `callbacks`: extra Lightning callbacks, run after gatelab's own each step.
    `launch`: a distributed strategy (one call per rank); None trains in this process on one device.
    `reuse_data`: keep the loaded corpus for this process's next trials (trainer.data.build_datasets)."""
    started = time.perf_counter()
    _quiet_lightning()
    trial_dir = Path(trial_dir)
    model_cfg = config.model_config()
    splits = build_datasets(config.data, config.seq_len, Path(cache_dir), model_cfg.vocab_size, reuse=reuse_data)
    checkpoint_dir = TrialFolder(trial_dir).checkpoints
    if launch is not None and not launch.rank_zero:
        trial_dir = trial_dir / "other-ranks" / str(os.getpid())  # their plots and records are never read
    trial_dir.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available()
    _record_start(config, tracker, splits, trial_dir, cuda)

    module = GatedLMModule(config, compiled=config.compiled_on(cuda))
    reporter = TrialReporter(config, tracker, splits.val, checkpoint_dir, tracker.last_steps())
    placement = {"accelerator": "gpu" if cuda else "cpu", "devices": 1, "plugins": [AtomicCheckpointIO()]}
    if launch is not None:
        placement = {
            "accelerator": "auto",
            "devices": "auto",
            "strategy": launch.strategy,
            "plugins": [*launch.plugins, AtomicCheckpointIO()],
        }
    trainer = pl.Trainer(
        **placement,
        precision=config.precision_on(cuda),
        max_steps=config.schedule.max_steps,
        accumulate_grad_batches=config.schedule.grad_accum,
        gradient_clip_val=config.optim.grad_clip or None,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[reporter, *callbacks],
    )
    if launch is not None and launch.prepare is not None:
        trainer = launch.prepare(trainer)
    fit_started = time.perf_counter()
    try:
        with NoteSigterm():
            trainer.fit(
                module,
                datamodule=TrialDataModule(config, splits, module),
                ckpt_path=newest_readable_checkpoint(checkpoint_dir, lambda text: _warn(tracker, text)),
                weights_only=True,
            )
    except (SystemExit, KeyboardInterrupt):
        if reporter.preempted is None:
            raise
        tracker.set_status(Status.PREEMPTED)
        raise TrialPreempted(*reporter.preempted) from None
    fit_ended = time.perf_counter()
    if reporter.train_device is not None:
        # Back where it trained: after fit Lightning leaves the module on the CPU, where a GPU trial's final
        # evaluation, probes and long-context passes took most of a 300-step `small` trial's time (H200 check).
        module.to(reporter.train_device)
    diverged = reporter.diverged_at is not None
    step = trainer.global_step
    summary = _finish(config, tracker, module, reporter, splits, trial_dir, step, diverged)
    if not diverged:
        reporter.save_checkpoint(trainer, step)
    status = Status.DIVERGED if diverged else Status.FINISHED
    tracker.flush()
    tracker.set_status(status)
    timings = {
        "setup_s": fit_started - started,
        "fit_s": fit_ended - fit_started,
        "checkpoint_s": reporter.checkpoint_seconds,
        "finish_s": time.perf_counter() - fit_ended,
    }
    return TrialResult(status=status, summary=summary, timings=timings)
