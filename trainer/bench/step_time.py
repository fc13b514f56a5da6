"""Seconds a training step of a given trial takes on this machine, measured: what a ladder's dry run turns
into each rung's wall time (grid/cli/ladder_dry_run.py). A few steps of the trial's own config, through the
trainer's own loop; the first steps (allocation, warm caches) are left out, and the median is taken."""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import lightning.pytorch as pl
import torch

from gatelab.trainer.bench.mfu import synchronize
from gatelab.trainer.config.trial import CheckpointConfig, TrialConfig
from gatelab.trainer.run import run_trial
from gatelab.trainer.tracker import InMemoryTracker


class _StepClock(pl.Callback):
    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._last: float | None = None

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        synchronize()
        self._last = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        synchronize()
        self.seconds.append(time.perf_counter() - self._last)


def seconds_per_step(config: TrialConfig, steps: int = 6, warmup: int = 2, threads: int | None = None) -> float:
    """The median seconds of one of `config`'s training steps, over `steps` after `warmup` (no evaluation or
    checkpoint among them), on `threads` CPU threads: a trial's CPU count, which Ray gives its worker as
    OMP_NUM_THREADS (measured with all of this machine's threads, a 1-CPU trial's steps came out 2-3x too fast)."""
    total = warmup + steps
    short = replace(
        config,
        schedule=replace(config.schedule, max_steps=total, log_every=total),
        eval=replace(config.eval, every=total, batches=1, long_context_factors=(1,)),
        checkpoint=CheckpointConfig(every=total, keep_last=1),
        optim=replace(config.optim, warmup_steps=min(config.optim.warmup_steps, total - 1)),
    )
    clock = _StepClock()
    before = torch.get_num_threads()
    try:
        if threads:
            torch.set_num_threads(threads)
        with tempfile.TemporaryDirectory() as tmp:
            run_trial(short, InMemoryTracker(), Path(tmp) / "trial", Path(tmp) / "cache", callbacks=(clock,))
    finally:
        torch.set_num_threads(before)
    return statistics.median(clock.seconds[warmup:])
