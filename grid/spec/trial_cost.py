"""A trial's estimated training cost: what the dry run shows and what the dispatch loop orders trials by.

Estimated training FLOPs = 3 x forward FLOPs per token x tokens per step x max_steps: the backward pass
costs about twice the forward (Kaplan et al. 2020's 6N per token, with attention included).
"""

from __future__ import annotations

from functools import cache

from gatelab.grid.spec.expand import Trial
from gatelab.trainer.config.catalog import get_variant
from gatelab.trainer.config.model_cost import forward_flops_per_token
from gatelab.trainer.config.presets import ModelConfig


def training_flops(trial: Trial) -> float:
    """Estimated FLOPs to train the trial to max_steps (evaluation and probes not counted)."""
    config = trial.config
    per_token = _forward_flops(config.model.resolve(), config.variant, config.catalog, config.seq_len)
    return 3 * per_token * config.tokens_per_step * config.schedule.max_steps


@cache
def _forward_flops(model: ModelConfig, variant: str, catalog: str | None, seq_len: int) -> float:
    return forward_flops_per_token(model, get_variant(variant, catalog), seq_len).total
