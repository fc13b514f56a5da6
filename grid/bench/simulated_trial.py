"""A simulated trial for `gatelab bench scale`: it does what a training trial does to everything around it, without
torch. Through the real tracker it logs the trainer's per-step metrics every `schedule.log_every` steps and an
evaluation every `eval.every` (trainer/trial_callback.py's names and cadence), writes a checkpoint every
`checkpoint.every` steps (after flushing the tracker, as the trainer does), resumes from its newest checkpoint
when Ray retries it on another node, logs the summary and ends `finished`. A step is `step_s` of sleep: a `small`
trial on a GPU (docs/cluster.md) runs ~10 steps a second, so the ledger sees a real trial's rate of writes.

The synthetic loss is a fixed function of the trial's seed and step, so a resumed trial logs exactly what an
uninterrupted one would: `gatelab bench scale` checks every step's point is stored once."""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from gatelab.trainer.config.metric_names import (
    FINAL_VAL_LOSS,
    FINAL_VAL_PPL,
    GRAD_NORM,
    LR,
    STEP,
    TOKENS_PER_S,
    TOKENS_SEEN,
    TRAIN_LOSS,
    VAL_LOSS,
    VAL_PPL,
)
from gatelab.trainer.config.outcome import Status, TrialResult
from gatelab.trainer.config.trial import TrialConfig
from gatelab.trainer.config.trial_folder import TrialFolder
from gatelab.trainer.tracker import Tracker

CHECKPOINT_SUFFIX = ".sim.json"  # a simulated checkpoint: {"step": n}; the trainer's are step-<n>.ckpt
KEEP_CHECKPOINTS = 2


def synthetic_loss(seed: int, step: int) -> float:
    """A decaying loss curve that differs a little per seed."""
    return 1.0 + 5.0 * math.exp(-step / 200) + 0.01 * (seed % 7)


@dataclass(frozen=True)
class SimulatedTrial:
    """The runner (grid/dispatch/worker.py TrialJob.runner): called as trainer.run.run_trial is. Plain data, so it
    pickles to Ray."""

    step_s: float = 0.1
    """Seconds a step takes (sleep)."""

    def __call__(
        self, config: TrialConfig, tracker: Tracker, trial_dir: Path, cache_dir: Path, reuse_data: bool = True
    ) -> TrialResult:
        started = time.perf_counter()
        checkpoints = TrialFolder(Path(trial_dir)).checkpoints
        checkpoints.mkdir(parents=True, exist_ok=True)
        sched = config.schedule
        logged = tracker.last_steps()  # a resumed trial logs no step twice
        step = newest_step(checkpoints)
        tokens_per_step = config.tokens_per_step
        while step < sched.max_steps:
            time.sleep(self.step_s)
            step += 1
            metrics = {}
            if step % sched.log_every == 0:
                metrics |= {
                    TRAIN_LOSS: synthetic_loss(config.seed, step),
                    LR: config.optim.lr,
                    GRAD_NORM: 1.0,
                    TOKENS_SEEN: float(step * tokens_per_step),
                    STEP: float(step),
                }
                if self.step_s > 0:
                    metrics[TOKENS_PER_S] = tokens_per_step / self.step_s
            if step % config.eval.every == 0 or step == sched.max_steps:
                val_loss = synthetic_loss(config.seed, step) + 0.05
                metrics |= {VAL_LOSS: val_loss, VAL_PPL: math.exp(val_loss)}
            fresh = {k: v for k, v in metrics.items() if step > logged.get(k, -1)}
            if fresh:
                tracker.log_metrics(fresh, step)
            if step % config.checkpoint.every == 0 and step < sched.max_steps:
                tracker.flush()  # what the checkpoint says is done is stored first, as the trainer does
                save_checkpoint(checkpoints, step)
        ended = time.perf_counter()
        final = synthetic_loss(config.seed, sched.max_steps) + 0.05
        summary = {FINAL_VAL_LOSS: final, FINAL_VAL_PPL: math.exp(final)}
        tracker.log_metrics(summary, sched.max_steps)
        tracker.set_status(Status.FINISHED)  # ends the run and waits until the server has all of it: the close lag
        done = time.perf_counter()
        timings = {"fit_s": done - started, "close_lag_s": done - ended}
        return TrialResult(Status.FINISHED, summary=summary, timings=timings)


def newest_step(checkpoints: Path) -> int:
    steps = [int(path.name.removesuffix(CHECKPOINT_SUFFIX)) for path in checkpoints.glob(f"*{CHECKPOINT_SUFFIX}")]
    return max(steps, default=0)


def save_checkpoint(checkpoints: Path, step: int) -> None:
    """Written whole or not at all (a rename), then all but the newest KEEP_CHECKPOINTS removed."""
    path = checkpoints / f"{step}{CHECKPOINT_SUFFIX}"
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps({"step": step}))
    os.replace(partial, path)
    for old in sorted(checkpoints.glob(f"*{CHECKPOINT_SUFFIX}"), key=lambda p: int(p.name.split(".")[0]))[
        :-KEEP_CHECKPOINTS
    ]:
        old.unlink(missing_ok=True)
