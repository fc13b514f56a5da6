"""A thin LightningModule around GatedLM, and the LightningDataModule with a resumable sample order.

Lightning owns the loop, precision, accumulation and checkpoint IO; this file adds only what is ours:
the paper's LR schedule (warmup then cosine to a floor, docs/paper.md §8), a clip that also reports the
pre-clip gradient norm, and a sampler whose position is a pure function of the global step, so a
resumed run reads exactly the batches the uninterrupted run would have read.
"""

from __future__ import annotations

import math
import random
from typing import Callable, Iterator

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from gatelab.trainer.config.metric_names import TRAIN_LOSS
from gatelab.trainer.config.trial import TrialConfig
from gatelab.trainer.data import CorpusSplits, epoch_permutation
from gatelab.trainer.model.gates import Gate
from gatelab.trainer.model.lm import GatedLM


def lr_factor(step: int, warmup_steps: int, max_steps: int, min_ratio: float) -> float:
    """Multiplier of the peak LR at `step`: linear warmup, then cosine decay to min_ratio."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class GatedLMModule(pl.LightningModule):
    def __init__(self, config: TrialConfig, compiled: bool = False) -> None:
        super().__init__()
        self.config = config
        torch.manual_seed(config.seed)  # the same init for every variant at a seed
        self.model = GatedLM(config.model.resolve(), config.variant_definition())
        # The compiled step is the model's bound `loss`, kept outside the module tree: compiling the nn.Module
        # would register an OptimizedModule whose state_dict keys carry `_orig_mod.`. So checkpoints hold the
        # eager model's keys and load into compiled and eager runs alike; evaluation calls self.model (eager).
        self.train_loss = torch.compile(self.model.loss) if compiled else self.model.loss
        self.last_grad_norm = float("nan")
        self._step_losses: list[torch.Tensor] = []
        self._step_parts: dict[str, list[torch.Tensor]] = {}

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        inputs_BT, targets_BT = batch
        loss, parts = self.train_loss(inputs_BT, targets_BT)
        self._step_losses.append(loss.detach())  # the objective itself, so a NaN in it is seen this step
        for key, value in parts.items():
            self._step_parts.setdefault(key, []).append(value)
        return loss

    def pop_step_metrics(self) -> dict[str, float]:
        """Mean loss (and MoE parts) over the micro-batches of the optimizer step just taken."""
        means = torch.stack(
            [torch.stack(self._step_losses).mean(), *(torch.stack(v).mean() for v in self._step_parts.values())]
        )
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # Every rank sees the same global loss, so spikes and divergence are decided alike everywhere.
            torch.distributed.all_reduce(means)
            means /= torch.distributed.get_world_size()
        values = means.tolist()
        out = {TRAIN_LOSS: values[0], **dict(zip(self._step_parts, values[1:]))}
        self._step_losses.clear()
        self._step_parts.clear()
        return out

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        clip = self.config.optim.grad_clip or float("inf")
        self.last_grad_norm = torch.nn.utils.clip_grad_norm_(self.parameters(), clip).item()

    def configure_optimizers(self):
        opt = self.config.optim
        decay, no_decay, seen = [], [], set()
        for module in self.model.modules():
            for name, param in module.named_parameters(recurse=False):
                if id(param) in seen:
                    continue  # the tied LM head is the embedding
                seen.add(id(param))
                # Matrices decay; norm scales and the input-independent gate parameter (§4.2) do not.
                is_matrix = param.ndim >= 2 and not (isinstance(module, Gate) and name == "score_param_Hw")
                (decay if is_matrix else no_decay).append(param)
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": opt.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=opt.lr,
            betas=(opt.beta1, opt.beta2),
            eps=opt.eps,
        )
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, _ScheduleFn(opt.warmup_steps, self.config.schedule.max_steps, opt.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Plain types only, so the checkpoint loads with weights_only=True.
        checkpoint["rng"] = {
            "torch": torch.get_rng_state(),
            "python": list(random.getstate()[1]),
            "numpy": np.random.get_state()[1].tolist(),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        rng = checkpoint["rng"]
        torch.set_rng_state(rng["torch"])
        random.setstate((3, tuple(rng["python"]), None))
        np.random.set_state(("MT19937", np.array(rng["numpy"], dtype=np.uint32), 624, 0, 0.0))


class _ScheduleFn:
    """Picklable LR lambda (LambdaLR keeps callable objects' __dict__ in its state)."""

    def __init__(self, warmup_steps: int, max_steps: int, min_ratio: float) -> None:
        self.warmup_steps, self.max_steps, self.min_ratio = warmup_steps, max_steps, min_ratio

    def __call__(self, step: int) -> float:
        return lr_factor(step, self.warmup_steps, self.max_steps, self.min_ratio)


class ResumableSampler(Sampler[int]):
    """Window indices for global samples start..total, epoch permutations fixed by the seed.

    `start_fn` is read when iteration begins, i.e. after Lightning restored the global step."""

    def __init__(self, n_windows: int, seed: int, total_samples: int, start_fn: Callable[[], int]) -> None:
        self.n, self.seed, self.total, self.start_fn = n_windows, seed, total_samples, start_fn

    def __len__(self) -> int:
        # What this iteration yields: the samples from the restored step on. Under DDP, Lightning's
        # DistributedSamplerWrapper sizes each rank's shard by len() and indexes the list it iterated, so the two
        # must agree on a resumed trial (a len() of the whole schedule made every DDP resume an IndexError).
        return self.total - min(self.start_fn(), self.total)

    def __iter__(self) -> Iterator[int]:
        sample = self.start_fn()
        epoch, order = -1, None
        while sample < self.total:
            if sample // self.n != epoch:
                epoch = sample // self.n
                order = epoch_permutation(self.n, self.seed, epoch)
            yield int(order[sample % self.n])
            sample += 1


class TrialDataModule(pl.LightningDataModule):
    def __init__(self, config: TrialConfig, splits: CorpusSplits, module: GatedLMModule) -> None:
        super().__init__()
        self.config, self.splits, self.module = config, splits, module

    def train_dataloader(self) -> DataLoader:
        sched = self.config.schedule
        # schedule.batch_size is the global batch: under DDP each of the R ranks reads batch_size / R, and
        # Lightning shards this sampler's stream across ranks (DistributedSamplerWrapper), so every step
        # consumes the same samples whatever R is — a trial's result (and key) does not depend on R.
        ranks = self.trainer.world_size if self.trainer is not None else 1
        if sched.batch_size % ranks:
            raise ValueError(
                f"schedule.batch_size={sched.batch_size} is the global batch and must be divisible "
                f"by the {ranks} data-parallel workers"
            )
        per_step = sched.batch_size * sched.grad_accum
        sampler = ResumableSampler(
            len(self.splits.train),
            self.config.seed,
            sched.max_steps * per_step,
            lambda: self.module.trainer.global_step * per_step,
        )
        return DataLoader(
            self.splits.train, batch_size=sched.batch_size // ranks, sampler=sampler, num_workers=0, drop_last=True
        )
