"""`gatelab bench gates`: forward+backward step time of each variant against the baseline.

All variants are timed round-robin in one process, so machine noise hits them alike; each ratio is the
median step time of the variant over the median of the baseline. The target (issue 2) on the laptop
preset: G1 elementwise <= 1 + its extra FLOP share + 0.02, G1 headwise <= 1.03.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from trainer.catalog import Variant, load_catalog
from trainer.gate_spec import SpecError
from trainer.model import GatedLM
from trainer.model_cost import forward_flops_per_token
from trainer.presets import ModelConfig


@dataclass(frozen=True)
class GateTiming:
    name: str
    """Catalog name."""
    median_ms: float
    """Median forward+backward time of one step."""
    ratio: float
    """median_ms over the baseline's, measured in the same run."""
    extra_flop_share: float
    """(variant FLOPs - baseline FLOPs) / baseline FLOPs, from the closed form."""


def _step(model: GatedLM, tokens_BT: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    loss, _ = model.loss(tokens_BT[:, :-1], tokens_BT[:, 1:])
    loss.backward()


def bench_gates(base: ModelConfig, batch_size: int = 8, rounds: int = 15, warmup: int = 3,
                names: list[str] | None = None, seed: int = 0) -> list[GateTiming]:
    catalog = load_catalog()
    chosen: dict[str, Variant] = {n: catalog[n] for n in (names or catalog)}
    chosen = {"baseline": catalog["baseline"], **chosen}
    models: dict[str, GatedLM] = {}
    for name, variant in chosen.items():
        try:
            torch.manual_seed(seed)
            models[name] = GatedLM(base, variant)
        except SpecError:
            continue  # e.g. more_experts on a dense preset
    generator = torch.Generator().manual_seed(seed)
    tokens_BT = torch.randint(0, base.vocab_size, (batch_size, base.max_seq_len + 1), generator=generator)
    times: dict[str, list[float]] = {name: [] for name in models}
    for round_index in range(warmup + rounds):
        for name, model in models.items():
            start = time.perf_counter()
            _step(model, tokens_BT)
            if round_index >= warmup:
                times[name].append(time.perf_counter() - start)
    baseline_ms = statistics.median(times["baseline"]) * 1e3
    baseline_flops = forward_flops_per_token(base, catalog["baseline"], base.max_seq_len).total
    results = []
    for name in models:
        median_ms = statistics.median(times[name]) * 1e3
        flops = forward_flops_per_token(base, chosen[name], base.max_seq_len).total
        results.append(GateTiming(name, median_ms, median_ms / baseline_ms, flops / baseline_flops - 1))
    return results
