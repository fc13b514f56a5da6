"""Verdicts on paired seed differences that stay valid when they are looked at after every wave of seeds.

An adaptive-seed grid compares each variant with the baseline on paired seeds (variant seed i against baseline
seed i, the same data order and initialisation stream): d_i = metric(variant, i) - metric(baseline, i). After
each wave a comparison is judged:

- **different**: the difference from 0 is significant;
- **equivalent**: the difference lies inside +-margin (two one-sided tests, TOST);
- **open**: neither yet; it gets another seed until `max`, where it stays **undecided**.

Why it stays valid (docs/design.md, adaptive seeds):
- *Repeated looks*: a comparison is looked at n = min, min+1, ..., max seeds, at most K = max - min + 1 times.
  Its p-value is the smallest one-sample t-test p-value over the looks so far times K (alpha spent equally over
  the planned looks, a Bonferroni bound): P(any look rejects a true null) <= sum over looks of alpha/K = alpha.
  The t-test assumes roughly normal seed-to-seed differences.
- *Many variants*: Holm's step-down correction over all of the grid's comparisons, each family (difference,
  equivalence) on its own. Holm is monotone in the p-values and each look-adjusted p-value is valid at any
  look, so the family-wise rate of a false "different" stays at or below alpha however the waves fall.
Both are conservative: with no true difference the false-"different" rate is well under alpha
(tests/test_sequential.py checks it by simulation, and that a difference of a few noise-sigmas is found).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from scipy import stats


class Verdict(str, Enum):
    DIFFERENT = "different"
    EQUIVALENT = "equivalent"
    OPEN = "open"
    UNDECIDED = "undecided"  # open at max seeds

    def __str__(self) -> str:
        return self.value


DECIDED = (Verdict.DIFFERENT, Verdict.EQUIVALENT, Verdict.UNDECIDED)  # no more seeds for it


@dataclass(frozen=True)
class SeedRule:
    """What a grid's `seeds:` block says about judging (grid/spec/seed_policy.py parses it)."""

    min: int
    max: int
    margin: float
    alpha: float

    @property
    def looks(self) -> int:
        return self.max - self.min + 1


@dataclass(frozen=True)
class Judgement:
    """One comparison (a variant against the baseline, under one condition) after its latest look."""

    n: int
    """Paired seeds used."""
    mean: float
    """Mean paired difference (variant - baseline)."""
    sd: float
    """Standard deviation of the paired differences (nan below 2 seeds)."""
    ci: tuple[float, float]
    """Confidence interval of the mean at level 1 - alpha/K (the look-corrected level, before Holm)."""
    p_different: float
    """Look-corrected p-value of 'no difference' (before Holm)."""
    p_equivalent: float
    """Look-corrected p-value of 'outside +-margin' (before Holm)."""
    verdict: Verdict


def t_p_values(diffs: Sequence[float], margin: float) -> tuple[float, float]:
    """(two-sided p of mean = 0, TOST p of |mean| >= margin) of one set of paired differences (n >= 2)."""
    n = len(diffs)
    mean = sum(diffs) / n
    sd = _sd(diffs, mean)
    if sd == 0:  # identical differences: certain about the mean
        return (0.0 if mean != 0 else 1.0), (0.0 if abs(mean) < margin else 1.0)
    se = sd / math.sqrt(n)
    p_zero = 2 * stats.t.sf(abs(mean) / se, n - 1)
    p_below = stats.t.sf((mean + margin) / se, n - 1)  # H0: mean <= -margin
    p_above = stats.t.cdf((mean - margin) / se, n - 1)  # H0: mean >= +margin
    return float(p_zero), float(max(p_below, p_above))


def look_corrected(diffs: Sequence[float], rule: SeedRule) -> tuple[float, float]:
    """The smallest p-values over the looks so far (min, min+1, ..., len(diffs) seeds), times K."""
    best_zero = best_equivalent = 1.0
    for n in range(rule.min, min(len(diffs), rule.max) + 1):
        p_zero, p_equivalent = t_p_values(diffs[:n], rule.margin)
        best_zero, best_equivalent = min(best_zero, p_zero), min(best_equivalent, p_equivalent)
    return min(1.0, best_zero * rule.looks), min(1.0, best_equivalent * rule.looks)


def holm(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm-adjusted p-values (step-down, monotone)."""
    ordered = sorted(p_values, key=p_values.get)
    adjusted, running = {}, 0.0
    for rank, name in enumerate(ordered):
        running = max(running, min(1.0, (len(ordered) - rank) * p_values[name]))
        adjusted[name] = running
    return adjusted


def judge(diffs: Mapping[str, Sequence[float]], rule: SeedRule) -> dict[str, Judgement]:
    """A judgement per comparison (all of the grid's: they form Holm's family), from its paired differences in
    seed order. Fewer than `min` seeds: open."""
    ready = {name: d for name, d in diffs.items() if len(d) >= rule.min}
    # Every comparison is in Holm's family, those still waiting for their first look with p = 1: leaving them
    # out would make the family smaller and the correction weaker than the grid's.
    corrected = {name: look_corrected(d, rule) if name in ready else (1.0, 1.0) for name, d in diffs.items()}
    holm_zero = holm({name: p[0] for name, p in corrected.items()})
    holm_equivalent = holm({name: p[1] for name, p in corrected.items()})
    out = {}
    for name, d in diffs.items():
        n = len(d)
        mean = sum(d) / n if n else math.nan
        sd = _sd(d, mean) if n >= 2 else math.nan
        if name not in ready:
            out[name] = Judgement(n, mean, sd, (math.nan, math.nan), 1.0, 1.0, Verdict.OPEN)
            continue
        if holm_zero[name] <= rule.alpha:
            verdict = Verdict.DIFFERENT
        elif holm_equivalent[name] <= rule.alpha:
            verdict = Verdict.EQUIVALENT
        else:
            verdict = Verdict.UNDECIDED if n >= rule.max else Verdict.OPEN
        half = stats.t.ppf(1 - rule.alpha / rule.looks / 2, n - 1) * sd / math.sqrt(n)
        out[name] = Judgement(n, mean, sd, (mean - half, mean + half), *corrected[name], verdict)
    return out


def seeds_to_resolve(sd: float, effect: float, power: float, alpha: float) -> int | None:
    """Paired seeds a two-sided t-test at level alpha needs to find a true mean difference `effect` with
    probability `power`, given the differences' standard deviation (noncentral t; at most 10,000)."""
    if not (sd > 0 and effect > 0):
        return None
    for n in range(2, 10_001):
        critical = stats.t.ppf(1 - alpha / 2, n - 1)
        shift = effect / (sd / math.sqrt(n))
        if stats.nct.sf(critical, n - 1, shift) + stats.nct.cdf(-critical, n - 1, shift) >= power:
            return n
    return None


def _sd(values: Sequence[float], mean: float) -> float:
    n = len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n >= 2 else math.nan
