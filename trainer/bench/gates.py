"""`gatelab bench gates`: forward+backward step time of each variant against the baseline.

All variants are timed in one process. In every round each variant's step is timed right after a
baseline step, and its ratio is the median over rounds of (variant time / that baseline time): a pair
runs back to back, so the drift and noise of a shared 2-core machine cancel within the pair. The target on the
laptop preset: G1 elementwise <= 1 + its extra FLOP share + 0.02, G1 headwise <= 1.03 (the paper reports under
2% wall-time latency for the gate; docs/paper.md §8). On CUDA the steps run in bf16 autocast, as trials
do; `compiled` times every model's torch.compile'd loss instead (compiled once, in the warm-up rounds).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from gatelab.trainer.bench.mfu import synchronize
from gatelab.trainer.config.catalog import Variant, load_catalog
from gatelab.trainer.config.gate_spec import SpecError
from gatelab.trainer.config.model_cost import forward_flops_per_token
from gatelab.trainer.config.presets import ModelConfig
from gatelab.trainer.model.lm import GatedLM


@dataclass(frozen=True)
class GateTiming:
    name: str
    """Catalog name."""
    median_ms: float
    """Median forward+backward time of one step."""
    ratio: float
    """Median over rounds of this variant's step time over the baseline step timed just before it."""
    extra_flop_share: float
    """(variant FLOPs - baseline FLOPs) / baseline FLOPs, from the closed form."""
    compiled: bool = False
    """Timed through torch.compile."""


def _step(model: GatedLM, loss_fn, tokens_BT: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    with torch.autocast(tokens_BT.device.type, dtype=torch.bfloat16, enabled=tokens_BT.is_cuda):
        loss, _ = loss_fn(tokens_BT[:, :-1], tokens_BT[:, 1:])
    loss.backward()


def bench_gates(
    base: ModelConfig,
    batch_size: int = 8,
    rounds: int = 15,
    warmup: int = 3,
    names: list[str] | None = None,
    seed: int = 0,
    compiled: bool = False,
) -> list[GateTiming]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    catalog = load_catalog()
    chosen: dict[str, Variant] = {n: catalog[n] for n in (names or catalog)}
    chosen = {"baseline": catalog["baseline"], **chosen}
    models: dict[str, GatedLM] = {}
    for name, variant in chosen.items():
        try:
            torch.manual_seed(seed)
            models[name] = GatedLM(base, variant).to(device)
        except SpecError:
            continue  # e.g. more_experts on a dense preset
    loss_fns = {name: torch.compile(model.loss) if compiled else model.loss for name, model in models.items()}
    generator = torch.Generator().manual_seed(seed)
    tokens_BT = torch.randint(0, base.vocab_size, (batch_size, base.max_seq_len + 1), generator=generator).to(device)
    times: dict[str, list[float]] = {name: [] for name in models}
    pair_ratios: dict[str, list[float]] = {name: [] for name in models}
    for round_index in range(warmup + rounds):
        for name, model in models.items():
            baseline_s = _timed_step(models["baseline"], loss_fns["baseline"], tokens_BT)
            variant_s = _timed_step(model, loss_fns[name], tokens_BT)
            if round_index >= warmup:
                times[name].append(variant_s)
                pair_ratios[name].append(variant_s / baseline_s)
    baseline_flops = forward_flops_per_token(base, catalog["baseline"], base.max_seq_len).total
    results = []
    for name in models:
        flops = forward_flops_per_token(base, chosen[name], base.max_seq_len).total
        results.append(
            GateTiming(
                name,
                statistics.median(times[name]) * 1e3,
                statistics.median(pair_ratios[name]),
                flops / baseline_flops - 1,
                compiled,
            )
        )
    return results


def _timed_step(model: GatedLM, loss_fn, tokens_BT: torch.Tensor) -> float:
    synchronize()
    start = time.perf_counter()
    _step(model, loss_fn, tokens_BT)
    synchronize()
    return time.perf_counter() - start
