"""Synthetic ladders drawn from a known law, to measure what tracking/stats/ladder.py claims: that its interval
covers the true difference at the target at about its nominal rate, that it says `holds` rarely when there is
nothing to find, and that it finds a crossing. The tests run small studies; `gatelab bench ladder` runs the
full one (docs/ladder.md has its figures).

The noise is seed noise of the kind a real ladder has: a part shared by every variant trained with one seed at
one rung (the same initialisation stream and data order: what pairing by seed cancels) and a part of each trial
alone. Its default sizes are those of the tiny CPU rungs (final-loss spread over seeds ~0.02 nats)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from gatelab.tracking.stats.ladder import LadderPoint, analyse_ladder

BASELINE = "baseline"


@dataclass(frozen=True)
class TrueLaw:
    """L_v(C) = floor + coefficient_v * (C / reference)^(-exponent_v), the law a synthetic ladder is drawn from."""

    floor: float
    coefficient: Mapping[str, float]
    exponent: Mapping[str, float]
    reference: float = 1e14

    def loss(self, variant: str, flops: float) -> float:
        return self.floor + self.coefficient[variant] * (flops / self.reference) ** -self.exponent[variant]

    def delta(self, variant: str, flops: float) -> float:
        return self.loss(variant, flops) - self.loss(BASELINE, flops)


@dataclass(frozen=True)
class Ladder:
    """A synthetic ladder's shape: the baseline's FLOPs per rung, seeds, each variant's extra FLOPs (its gate),
    and the noise."""

    rung_flops: Sequence[float] = (1e14, 2.5e14, 6.25e14, 1.5625e15)
    seeds: int = 3
    gate_flops: float = 0.02
    """A gated variant's FLOPs over the baseline's at the same rung, minus 1."""
    shared_noise: float = 0.02
    own_noise: float = 0.01


def simulate(law: TrueLaw, shape: Ladder, rng: np.random.Generator) -> list[LadderPoint]:
    points = []
    for seed in range(shape.seeds):
        shared = rng.normal(0.0, shape.shared_noise, len(shape.rung_flops))
        for variant in law.coefficient:
            scale = 1.0 if variant == BASELINE else 1.0 + shape.gate_flops
            for rung, flops in enumerate(shape.rung_flops):
                noise = shared[rung] + rng.normal(0.0, shape.own_noise)
                points.append(LadderPoint(variant, rung, seed, flops * scale, law.loss(variant, flops * scale) + noise))
    return points


@dataclass(frozen=True)
class Study:
    """How often, over simulated ladders of one law, the interval covered the truth and what the verdicts were."""

    ladders: int
    true_delta: float
    coverage: float
    verdicts: Mapping[str, float]
    """Share of each verdict."""
    backtest_inside: float
    seconds: float


def study(
    law: TrueLaw,
    shape: Ladder,
    *,
    variant: str,
    target_flops: float,
    ladders: int,
    resamples: int,
    seed: int = 0,
) -> Study:
    """`ladders` ladders drawn from `law`, each analysed as a user's would be."""
    import time

    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    truth = law.delta(variant, target_flops)
    covered, inside, verdicts = 0, 0, {"holds": 0, "flips": 0, "inconclusive": 0}
    for index in range(ladders):
        result = analyse_ladder(
            simulate(law, shape, rng), baseline=BASELINE, target_flops=target_flops, resamples=resamples, seed=index
        )
        (found,) = [v for v in result.variants if v.variant == variant]
        covered += found.delta.contains(truth)
        verdicts[found.verdict] += 1
        inside += bool(found.backtest and found.backtest.inside)
    return Study(
        ladders=ladders,
        true_delta=truth,
        coverage=covered / ladders,
        verdicts={k: n / ladders for k, n in verdicts.items()},
        backtest_inside=inside / ladders,
        seconds=time.perf_counter() - started,
    )


# The laws of the validation, in nats at tiny scale: an effect that persists (the gate's coefficient 5% lower at
# the same exponent), no effect at all, and a crossing (the gate better on small rungs, worse at the target
# because its loss falls more slowly with compute).
EFFECT = TrueLaw(floor=2.0, coefficient={BASELINE: 1.0, "g1": 0.95}, exponent={BASELINE: 0.25, "g1": 0.25})
NULL = TrueLaw(floor=2.0, coefficient={BASELINE: 1.0, "g1": 1.0}, exponent={BASELINE: 0.25, "g1": 0.25})
CROSSING = TrueLaw(floor=2.0, coefficient={BASELINE: 1.0, "g1": 0.8}, exponent={BASELINE: 0.25, "g1": 0.15})
STUDY_TARGET = 1e17  # 64x the largest default rung


def crossing_flops(law: TrueLaw, variant: str) -> float:
    """Where a crossing law's difference changes sign (the two power terms equal)."""
    a_b, a_v = law.coefficient[BASELINE], law.coefficient[variant]
    e_b, e_v = law.exponent[BASELINE], law.exponent[variant]
    return law.reference * math.exp(math.log(a_v / a_b) / (e_v - e_b))
