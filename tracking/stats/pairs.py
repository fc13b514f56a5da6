"""What a paired comparison pairs, decided once for the report, `gatelab plan` and a `seeds:` grid's plan.

A variant and the baseline trained with the same seed share their initialisation stream and data order, so their
difference on a metric is a pair. A trial has a value to pair only when it FINISHED with a finite value of the
metric. A diverged trial has none: divergence is a result counted on its own (the report's "diverged" column,
`gatelab status`), never a loss to average, and a diverged run has no final validation loss to compare
(trainer/config/metric_names.py: a diverged trial logs diverged_at_step and no probes). So a seed at which either
side diverged or failed forms no pair. The report and `gatelab plan` pair every such seed; a `seeds:` grid's
sequential plan (tracking/stats/seed_plan.py) takes seeds in order and stops a comparison at the first seed that
forms no pair, saying why.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from gatelab.trainer.config.outcome import Status


def paired_value(status: str, value: float) -> float | None:
    """A trial's value in a paired comparison, or None when it has none (not FINISHED, or not finite)."""
    return float(value) if status == Status.FINISHED and math.isfinite(value) else None


def seed_values(trials: Iterable[tuple[int, str, float]]) -> dict[int, float]:
    """Seed -> paired value, from (seed, status, value of the metric) of one side's trials."""
    return {seed: v for seed, status, value in trials if (v := paired_value(status, value)) is not None}


def paired_differences(variant: Mapping[int, float], baseline: Mapping[int, float]) -> dict[int, float]:
    """Seed -> variant - baseline over the seeds both have a finite value for, in seed order."""
    seeds = sorted(s for s in set(variant) & set(baseline) if math.isfinite(variant[s]) and math.isfinite(baseline[s]))
    return {s: variant[s] - baseline[s] for s in seeds}
