"""`gatelab bench trainer`: tokens/s of gatelab's Lightning loop against a minimal hand-written PyTorch loop
on the same model, data, batch, optimizer and schedule, measured side by side in one process.

Both sides are timed per step (wall time between steps, batch fetch included) after `warmup` steps,
excluding evaluation and checkpoints on gatelab's side (its logged `tokens_per_s` already excludes them).
The runs alternate (hand, gatelab, hand, ...) and the ratio compares medians of the per-step rates, so
drift and the noise of a shared 2-core machine hit both sides alike.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from trainer.config import CheckpointConfig, EvalConfig, ScheduleConfig, TrialConfig
from trainer.data import build_datasets
from trainer.lightning_module import GatedLMModule, ResumableSampler
from trainer.run import run_trial
from trainer.tracker import InMemoryTracker


def bench_config(preset: str, steps: int) -> TrialConfig:
    return TrialConfig(name="bench", variant="baseline", model=replace(TrialConfig().model, preset=preset),
                       schedule=ScheduleConfig(max_steps=steps, batch_size=8, log_every=1),
                       eval=EvalConfig(every=10 * steps, batches=1, long_context_factors=(1,)),
                       checkpoint=CheckpointConfig(every=10 * steps))


def hand_loop_rates(config: TrialConfig, splits, warmup: int) -> list[float]:
    """The minimal loop: same init, sample order, AdamW groups, schedule and clipping, no framework.
    Timed like gatelab's side: wall time per step including fetching the batch."""
    module = GatedLMModule(config)  # only for its model init and optimizer recipe
    per_step = config.schedule.batch_size
    sampler = ResumableSampler(len(splits.train), config.seed, config.schedule.max_steps * per_step, lambda: 0)
    loader = DataLoader(splits.train, batch_size=per_step, sampler=sampler, drop_last=True)
    setup = module.configure_optimizers()
    optimizer, schedule = setup["optimizer"], setup["lr_scheduler"]["scheduler"]
    model = module.model.train()
    stamps = [time.perf_counter()]
    for inputs_BT, targets_BT in loader:
        loss, _ = model.loss(inputs_BT, targets_BT)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()
        stamps.append(time.perf_counter())
    return [config.tokens_per_step / (b - a) for a, b in zip(stamps[warmup:], stamps[warmup + 1:])]


def gatelab_rates(config: TrialConfig, tmp: Path, tag: str, warmup: int) -> list[float]:
    """Per-step tokens/s of run_trial's loop, from its own log (evaluation and checkpoint pauses excluded)."""
    tracker = InMemoryTracker()
    run_trial(config, tracker, tmp / f"trial-{tag}", tmp / "cache")
    return [v for step, v in tracker.metrics["tokens_per_s"] if step > warmup]


def bench_trainer(preset: str = "laptop", steps: int = 40, warmup: int = 10, repeats: int = 2) -> dict:
    """Alternates hand, gatelab, hand, gatelab, ..., hand; compares the medians of per-step rates."""
    config = bench_config(preset, steps)
    hand: list[float] = []
    ours: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        splits = build_datasets(config.data, config.seq_len, tmp / "cache", config.model_config().vocab_size)
        hand += hand_loop_rates(config, splits, warmup)
        for repeat in range(repeats):
            ours += gatelab_rates(config, tmp, str(repeat), warmup)
            hand += hand_loop_rates(config, splits, warmup)
    hand_median, ours_median = statistics.median(hand), statistics.median(ours)
    return {"preset": preset, "steps": steps, "repeats": repeats, "gatelab_tokens_per_s": ours_median,
            "hand_tokens_per_s": hand_median, "ratio": ours_median / hand_median,
            "hand_spread": [min(hand), max(hand)], "gatelab_spread": [min(ours), max(ours)]}
