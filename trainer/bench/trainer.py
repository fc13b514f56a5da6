"""`gatelab bench trainer`: tokens/s of gatelab's Lightning loop against a minimal hand-written PyTorch loop
on the same model, data, batch, optimizer and schedule, measured side by side in one run.

The two loops run in lockstep: after each gatelab step (Lightning loop plus gatelab's own per-step
bookkeeping), a callback runs one step of the hand loop on its own copy of the model. Each step pair
is timed back to back, so the noise of a shared 2-core machine hits both alike; the ratio is the median
over steps of hand_time / gatelab_time. Evaluation and checkpoints are outside the compared steps.

With `compiled`, gatelab's loop runs the trial option `compile: true` and the hand loop stays eager, so the
ratio is compiled over eager tokens/s (gatelab's own bookkeeping costs ~1% of a step, the eager ratio shows).
Both loops' tokens/s also come as MFU: the model's FLOPs (trainer/bench/mfu.py) over the peak measured in this run.
On CUDA both loops train in bf16 autocast, as trials do.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from gatelab.trainer.bench.mfu import machine_peak, synchronize, training_flops_per_token, utilisation
from gatelab.trainer.config.trial import CheckpointConfig, EvalConfig, ScheduleConfig, TrialConfig
from gatelab.trainer.lightning_module import GatedLMModule, ResumableSampler
from gatelab.trainer.run import run_trial
from gatelab.trainer.tracker import InMemoryTracker


def bench_config(
    preset: str, steps: int, variant: str = "baseline", compiled: bool = False, batch_size: int = 8
) -> TrialConfig:
    return TrialConfig(
        name="bench",
        variant=variant,
        model=replace(TrialConfig().model, preset=preset),
        compile=compiled,
        schedule=ScheduleConfig(max_steps=steps, batch_size=batch_size, log_every=1),
        eval=EvalConfig(every=10 * steps, batches=1, long_context_factors=(1,)),
        checkpoint=CheckpointConfig(every=10 * steps),
    )


class HandLoop:
    """The minimal loop: same init, sample order, AdamW groups, schedule and clipping, no framework."""

    def __init__(self, config: TrialConfig, train_windows) -> None:
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        module = GatedLMModule(replace(config, compile=False)).to(self.device)  # its init and optimizer recipe
        per_step = config.schedule.batch_size
        sampler = ResumableSampler(len(train_windows), config.seed, config.schedule.max_steps * per_step, lambda: 0)
        self.batches = iter(DataLoader(train_windows, batch_size=per_step, sampler=sampler, drop_last=True))
        setup = module.configure_optimizers()
        self.optimizer, self.schedule = setup["optimizer"], setup["lr_scheduler"]["scheduler"]
        self.model, self.clip = module.model.train(), config.optim.grad_clip

    def step(self) -> None:
        inputs_BT, targets_BT = (t.to(self.device) for t in next(self.batches))
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            loss, _ = self.model.loss(inputs_BT, targets_BT)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.optimizer.step()
        self.schedule.step()
        self.optimizer.zero_grad(set_to_none=True)
        loss.item()


class _Lockstep(pl.Callback):
    """Runs after gatelab's own callback: times gatelab's step (end to end), then one hand step."""

    def __init__(self, config: TrialConfig) -> None:
        self.config = config
        self.hand: HandLoop | None = None
        self.pairs: list[tuple[float, float]] = []
        self._last_end: float | None = None

    def on_train_start(self, trainer, module) -> None:
        self.hand = HandLoop(self.config, trainer.datamodule.splits.train)
        self._last_end = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        synchronize()
        gatelab_s = time.perf_counter() - self._last_end
        start = time.perf_counter()
        self.hand.step()
        synchronize()
        hand_s = time.perf_counter() - start
        self.pairs.append((gatelab_s, hand_s))
        self._last_end = time.perf_counter()


def bench_trainer(
    preset: str = "laptop",
    steps: int = 60,
    warmup: int = 10,
    variant: str = "baseline",
    compiled: bool = False,
    batch_size: int = 8,
) -> dict:
    config = bench_config(preset, steps, variant, compiled, batch_size)
    lockstep = _Lockstep(config)
    with tempfile.TemporaryDirectory() as tmp:
        run_trial(config, InMemoryTracker(), Path(tmp) / "trial", Path(tmp) / "cache", callbacks=(lockstep,))
    pairs = lockstep.pairs[warmup:]
    tokens = config.tokens_per_step
    flops_per_token = training_flops_per_token(config.model.resolve(), config.variant_definition(), config.seq_len)
    peak = machine_peak()
    gatelab_tokens_per_s = tokens / statistics.median(g for g, _ in pairs)
    hand_tokens_per_s = tokens / statistics.median(h for _, h in pairs)
    # Steps that ran an evaluation or a checkpoint are excluded by the config (both happen only at the end).
    return {
        "preset": preset,
        "variant": variant,
        "compiled": compiled,
        "steps": len(pairs),
        "batch_size": batch_size,
        "tokens_per_step": tokens,
        "gatelab_tokens_per_s": gatelab_tokens_per_s,
        "hand_tokens_per_s": hand_tokens_per_s,
        "ratio": statistics.median(h / g for g, h in pairs),
        "ratio_quartiles": statistics.quantiles([h / g for g, h in pairs], n=4),
        "flops_per_token": flops_per_token,
        "peak": peak,
        "gatelab_mfu": utilisation(flops_per_token, gatelab_tokens_per_s, peak),
        "hand_mfu": utilisation(flops_per_token, hand_tokens_per_s, peak),
    }
