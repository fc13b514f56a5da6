"""The Lightning callback that turns one trial's steps into results: metrics, spikes, divergence,
evaluations, probes and checkpoints, in one fixed order per optimizer step.

Order per step: train metrics -> evaluation (and probes) -> flush the tracker -> checkpoint. So everything
logged up to a checkpoint's step is stored before the checkpoint exists, and a resumed run recomputes
(exactly) and skips only what was already logged after it: the history has no gap and no duplicate.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import lightning.pytorch as pl

from gatelab.trainer.checkpoint import checkpoint_path, prune_checkpoints
from gatelab.trainer.config.metric_names import (
    GRAD_NORM,
    LR,
    SPIKE_RATIO,
    STEP,
    TOKENS_PER_S,
    TOKENS_SEEN,
    TRAIN_LOSS,
    VAL_LOSS,
    VAL_PPL,
)
from gatelab.trainer.config.trial import TrialConfig
from gatelab.trainer.evaluate import fixed_batches, mean_loss, perplexity, probe
from gatelab.trainer.preemption import signal_name
from gatelab.trainer.spikes import SpikeDetector
from gatelab.trainer.tracker import Tracker


class TrialReporter(pl.Callback):
    def __init__(
        self, config: TrialConfig, tracker: Tracker, val_dataset, checkpoint_dir: Path, already_logged: dict[str, int]
    ) -> None:
        self.config, self.tracker, self.checkpoint_dir = config, tracker, Path(checkpoint_dir)
        self.already_logged = dict(already_logged)
        stab = config.stability
        self.spikes = SpikeDetector(
            stab.spike_window, stab.spike_factor, stab.recover_factor, stab.spike_z, stab.spike_single_step_factor
        )
        self.val_batches = fixed_batches(val_dataset, config.schedule.batch_size, config.eval.batches)
        self.probe_batches = self.val_batches[: config.eval.probe_batches]
        self.train_curve: list[tuple[int, float]] = []
        self.val_curve: list[tuple[int, float]] = []
        self.eval_count = 0
        self.diverged_at: int | None = None
        self._timer = (time.perf_counter(), 0)  # (time, step) of the last throughput reading
        self._paused = 0.0  # seconds spent evaluating/checkpointing since that reading
        self.checkpoint_seconds = 0.0  # total time writing checkpoints (overhead in `gatelab bench grid`)
        self.train_device = None  # where fit trained: Lightning's teardown moves the module to the CPU after it
        self.preempted: tuple[int, str] | None = None  # (step, signal) when SIGTERM or Ctrl-C stopped training

    def on_train_start(self, trainer, module) -> None:
        self.train_device = module.device

    # Not named `log`: Lightning overwrites a callback's `log` attribute with the module's.
    def record(self, metrics: dict[str, float], step: int) -> None:
        """Log each metric at most once per step: not again after a resume (`already_logged` comes from the
        run's stored histories), nor twice in one attempt (the final probes reach both their own record and the
        summary's)."""
        fresh = {k: v for k, v in metrics.items() if step > self.already_logged.get(k, -1)}
        if fresh:
            self.tracker.log_metrics(fresh, step)
            self.already_logged.update(dict.fromkeys(fresh, step))

    def evaluate(self, module, step: int) -> float:
        val_loss = mean_loss(module.model, self.val_batches)
        self.val_curve.append((step, val_loss))
        self.eval_count += 1
        metrics = {VAL_LOSS: val_loss, VAL_PPL: perplexity(val_loss)}
        probe_every = self.config.eval.probe_every
        if probe_every and self.eval_count % probe_every == 0:
            metrics.update(probe(module.model, self.probe_batches).to_metrics())
        self.record(metrics, step)
        return val_loss

    def save_checkpoint(self, trainer: pl.Trainer, step: int) -> None:
        started = time.perf_counter()
        self.tracker.flush()
        trainer.save_checkpoint(checkpoint_path(self.checkpoint_dir, step), weights_only=False)
        prune_checkpoints(self.checkpoint_dir, self.config.checkpoint.keep_last)
        self.checkpoint_seconds += time.perf_counter() - started

    def on_exception(self, trainer, module, exception: BaseException) -> None:
        """SIGTERM or Ctrl-C (trainer/preemption.py): write the checkpoint of the step the trial is on."""
        name = signal_name(exception)
        if name is None:
            return
        step = trainer.global_step
        if step > 0 and not checkpoint_path(self.checkpoint_dir, step).exists():
            self.save_checkpoint(trainer, step)
        self.preempted = (step, name)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if len(module._step_losses) < self.config.schedule.grad_accum:
            return  # mid-accumulation: no optimizer step yet
        step = trainer.global_step
        metrics = module.pop_step_metrics()
        loss = metrics[TRAIN_LOSS]
        self.train_curve.append((step, loss))
        diverged = not math.isfinite(loss) or loss > self.config.divergence_loss
        spike = None if diverged else self.spikes.update(step, loss)
        sched = self.config.schedule
        if step % sched.log_every == 0 or spike or diverged:
            now = time.perf_counter()
            last_time, last_step = self._timer
            elapsed = now - last_time - self._paused
            tokens_per_step = self.config.tokens_per_step  # global: DDP ranks split the batch
            metrics.update(
                {
                    LR: trainer.optimizers[0].param_groups[0]["lr"],  # (the second "lr" is torch's key)
                    GRAD_NORM: module.last_grad_norm,
                    TOKENS_SEEN: float(step * tokens_per_step),
                    STEP: float(step),
                }
            )  # read by `gatelab status` / submit's progress
            if step > last_step and elapsed > 0:
                metrics[TOKENS_PER_S] = (step - last_step) * tokens_per_step / elapsed
            if spike:
                metrics[SPIKE_RATIO] = spike.ratio
            self.record(metrics, step)
            self._timer, self._paused = (now, step), 0.0
        if diverged:
            self.diverged_at = step
            trainer.should_stop = True  # divergence is a result, not a crash (docs/design.md, Conventions)
            return
        if step >= sched.max_steps:
            return  # the final evaluation and checkpoint happen after fit, once
        started = time.perf_counter()
        if step % self.config.eval.every == 0:
            self.evaluate(module, step)
        if step % self.config.checkpoint.every == 0:
            self.save_checkpoint(trainer, step)
        self._paused += time.perf_counter() - started

    def state_dict(self) -> dict:
        return {
            "spikes": self.spikes.state_dict(),
            "train_curve": [list(p) for p in self.train_curve],
            "val_curve": [list(p) for p in self.val_curve],
            "eval_count": self.eval_count,
        }

    def load_state_dict(self, state: dict) -> None:
        self.spikes.load_state_dict(state["spikes"])
        self.train_curve = [tuple(p) for p in state["train_curve"]]
        self.val_curve = [tuple(p) for p in state["val_curve"]]
        self.eval_count = state["eval_count"]
