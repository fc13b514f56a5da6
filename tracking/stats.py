"""The statistics of a report, as pure functions: mean ± std over seeds, the paired comparison against the
baseline, and the maximum stable learning rate.

DESIGN.md ("Evidence"): a variant is "better" in a report only over several seeds, with the test and p-value
printed. So a comparison always says which test it used, on how many seed pairs, and why there is none.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from scipy import stats as scipy_stats

ALPHA = 0.05
"""Significance level under which a paired difference counts as 'better' or 'worse'."""
STABLE_MARGIN = 0.05
"""Default relative margin above a variant's best final loss that still counts as stable."""
DONE_STATUSES = ("finished", "diverged")
"""Statuses that are results (tracking.ledger.DONE_STATUSES); divergence is a result (DESIGN.md)."""


@dataclass(frozen=True, kw_only=True)
class MeanStd:
    """Mean and sample standard deviation of a measured figure over seeds."""

    mean: float
    """Mean over the values."""
    std: float | None
    """Sample standard deviation (ddof=1); None with one value."""
    n: int
    """How many values."""


@dataclass(frozen=True, kw_only=True)
class PairedComparison:
    """A variant against the baseline, paired by seed (same init and data order)."""

    n_pairs: int
    """Seeds both have a finished result for."""
    mean_diff: float | None
    """Mean of (variant - baseline) over the pairs; None without pairs."""
    test: str
    """'paired t-test', or why there is none ('n=1, no test', 'no seeds in common with the baseline', ...)."""
    statistic: float | None
    """The t statistic; None without a test."""
    p_value: float | None
    """Two-sided p-value; None without a test (or when the differences have no variance)."""

    @property
    def verdict(self) -> str:
        """'better' / 'worse' (lower is better) only with a test over >= 2 pairs and p < ALPHA."""
        if self.p_value is None or self.mean_diff is None:
            return "not tested"
        if self.p_value >= ALPHA:
            return "n.s."
        return "better" if self.mean_diff < 0 else "worse"

    def describe(self) -> str:
        """One line for a table cell, e.g. 'paired t-test, n=3: t=-4.12, p=0.054'."""
        if self.statistic is None:
            return self.test
        p = "n/a (zero variance)" if self.p_value is None else f"{self.p_value:.3g}"
        return f"{self.test}, n={self.n_pairs}: t={self.statistic:.3g}, p={p}"


def mean_std(values: Iterable[float]) -> MeanStd | None:
    """Mean ± sample std of the finite values; None when there is none."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return None
    std = statistics.stdev(finite) if len(finite) > 1 else None
    return MeanStd(mean=statistics.fmean(finite), std=std, n=len(finite))


def paired_comparison(variant: Mapping[int, float], baseline: Mapping[int, float]) -> PairedComparison:
    """Compare per-seed values (lower is better), pairing equal seeds; a paired t-test
    (scipy.stats.ttest_rel) needs >= 2 pairs. Non-finite values are left out of the pairs."""
    seeds = sorted(s for s in set(variant) & set(baseline)
                   if math.isfinite(variant[s]) and math.isfinite(baseline[s]))
    if not seeds:
        why = "no seeds in common with the baseline" if not set(variant) & set(baseline) \
            else "no finite pairs with the baseline"
        return PairedComparison(n_pairs=0, mean_diff=None, test=why, statistic=None, p_value=None)
    diffs = [variant[s] - baseline[s] for s in seeds]
    mean_diff = statistics.fmean(diffs)
    if len(seeds) == 1:
        return PairedComparison(n_pairs=1, mean_diff=mean_diff, test="n=1, no test", statistic=None,
                                p_value=None)
    if max(diffs) == min(diffs):  # t is undefined (0/0 or +-inf) when every pair differs by the same amount
        statistic = 0.0 if diffs[0] == 0 else math.copysign(math.inf, diffs[0])
        return PairedComparison(n_pairs=len(seeds), mean_diff=mean_diff, test="paired t-test",
                                statistic=statistic, p_value=None)
    result = scipy_stats.ttest_rel([variant[s] for s in seeds], [baseline[s] for s in seeds])
    return PairedComparison(n_pairs=len(seeds), mean_diff=mean_diff, test="paired t-test",
                            statistic=float(result.statistic), p_value=float(result.pvalue))


def max_stable_lr(results: Iterable[tuple[float, str, float]], margin: float = STABLE_MARGIN) -> float | None:
    """The largest LR that neither diverged nor ended more than `margin` (relative) above the variant's best
    final loss (Table 2 reports each model's maximum LR; 'convergence problems' count as unstable there).

    `results`: (lr, status, final_loss) per trial, any number per LR (e.g. several seeds). A result with
    status 'diverged' or a non-finite loss is unstable; statuses that are not results (running, failed,
    killed) are ignored. An LR is stable only when all of its results are. None when no LR is stable.
    """
    if margin < 0:
        raise ValueError(f"margin={margin}: expected >= 0")
    by_lr: dict[float, list[tuple[str, float]]] = {}
    for lr, status, loss in results:
        if status in DONE_STATUSES:
            by_lr.setdefault(float(lr), []).append((status, float(loss)))
    finite = [loss for runs in by_lr.values() for status, loss in runs
              if status == "finished" and math.isfinite(loss)]
    if not finite:
        return None
    ceiling = min(finite) * (1 + margin) if min(finite) >= 0 else min(finite) * (1 - margin)
    stable = [lr for lr, runs in by_lr.items()
              if all(status == "finished" and math.isfinite(loss) and loss <= ceiling for status, loss in runs)]
    return max(stable, default=None)


def best_lr(results: Iterable[tuple[float, str, float]]) -> float | None:
    """The LR whose finished results have the lowest mean final loss, preferring LRs where no result diverged;
    None when no LR has a finite finished result."""
    by_lr: dict[float, list[float]] = {}
    bad: set[float] = set()
    for lr, status, loss in results:
        if status == "diverged" or (status == "finished" and not math.isfinite(loss)):
            bad.add(float(lr))
        elif status == "finished":
            by_lr.setdefault(float(lr), []).append(float(loss))
    means = {lr: statistics.fmean(losses) for lr, losses in by_lr.items()}
    return min(means, key=lambda lr: (lr in bad, means[lr], lr)) if means else None
