"""A model ladder's fit: loss against training compute per variant, extrapolated to a target scale with an
honest interval. Pure numpy/scipy (no MLflow, no torch): the report hands it plain points.

The law (the scaling-law form of Kaplan et al. 2020 and Hoffmann et al. 2022, in compute): for each variant v,

    L_v(C) = E + A_v * C^(-alpha_v)

with C a trial's training FLOPs (the gate's own FLOPs included: they differ between variants and are part of
the comparison) and the floor E shared by all variants. With a shared floor the difference at equal compute,
Delta_v(C) = L_v(C) - L_baseline(C) = A_v C^-alpha_v - A_b C^-alpha_b, does not depend on E, which the rungs of
an affordable ladder pin down worst. With fewer than MIN_RUNGS_FOR_FLOOR rungs E is not fitted but held at
`floor` (default 0, a pure power law), and the result says so: three points fit a three-parameter curve
exactly and tell nothing about its floor.

The fit minimises a Huber loss on log residuals (delta HUBER_DELTA) with L-BFGS-B from several starts, as the
Chinchilla replication (Besiroglu et al. 2024) and OLMo's ladder work do; scipy does the optimising.

The uncertainty is a paired bootstrap over seeds: a resample draws seed indices with replacement, once for the
whole ladder, and takes every variant's and every rung's trial of each drawn seed, so that a variant and the
baseline trained with one seed stay paired. Each resample is refitted; their spread is the standard error of
the whole ladder's estimate (read robustly, from their interquartile range), widened for the few seeds a ladder
has and read with Student's t (`_Estimate`).
From it: Delta's interval at the target, P(Delta < 0) and P(Delta > 0), and the compute multiplier (how much
more compute the baseline needs to reach the variant's loss at the target).

Verdict at the target: `holds` when P(Delta < 0) >= VERDICT_PROBABILITY, `flips` when P(Delta > 0) >= it,
`inconclusive` otherwise; always with the extrapolation factor (target FLOPs / the largest rung's FLOPs).

Backtest: the same fit on every rung but the largest predicts the largest rung's paired difference (each side at
its own FLOPs there, plus the noise of a mean over its paired seeds); the report says whether the measured
difference fell in the predicted interval. When too few rungs remain to fit the floor, the backtest's fit keeps
the whole ladder's floor: the smaller rungs still decide the curves' shape.

Degenerate fits are named in `warnings`: too few rungs, a floor held fixed, an exponent at its bound, an interval
wider than ten times the effect, points dropped because their trial diverged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy.optimize import minimize
from scipy.stats import t as student_t

MIN_RUNGS = 3  # fewer and there is no curve to speak of
MIN_RUNGS_FOR_FLOOR = 4  # fewer and the shared floor E is held at `floor`, not fitted
HUBER_DELTA = 1e-3  # on log-loss residuals (Hoffmann et al. 2022, Besiroglu et al. 2024)
ALPHA_BOUNDS = (1e-3, 2.0)  # the compute exponent's search range; a fit at either end is flagged
VERDICT_PROBABILITY = 0.9
INTERVAL = 0.9  # the central bootstrap interval reported for Delta and the multiplier
DEFAULT_RESAMPLES = 1000
IQR_PER_SD = 1.349  # a normal distribution's interquartile range in standard deviations
WIDE_INTERVAL = 10.0  # an interval this many times wider than |Delta| says the ladder cannot tell

Verdict = Literal["holds", "flips", "inconclusive"]


@dataclass(frozen=True)
class LadderTarget:
    """Where a ladder grid extrapolates to, and how its fit is set (grid/spec/ladder_spec.py fills it in)."""

    target_flops: float
    floor: float | None = None
    """Hold the floor E here; None: fitted from MIN_RUNGS_FOR_FLOOR rungs up, else 0."""
    paper_delta: float | None = None
    """The paper's own difference at the target's scale (nats), shown beside the extrapolation."""
    resamples: int = DEFAULT_RESAMPLES


@dataclass(frozen=True)
class LadderPoint:
    """One trial of a ladder: its variant, rung, seed, training FLOPs and final loss (NaN: it diverged)."""

    variant: str
    rung: int
    seed: int
    flops: float
    loss: float


@dataclass(frozen=True)
class Law:
    """A fitted ladder: the shared floor and each variant's coefficient and exponent."""

    floor: float
    coefficient: dict[str, float]
    exponent: dict[str, float]
    log_flops_ref: float
    """The coefficients are for C / exp(log_flops_ref): centring keeps the fit well conditioned."""

    def loss(self, variant: str, flops: float | np.ndarray) -> float | np.ndarray:
        x = np.log(flops) - self.log_flops_ref
        return self.floor + self.coefficient[variant] * np.exp(-self.exponent[variant] * x)

    def compute_for_loss(self, variant: str, loss: float) -> float:
        """The FLOPs at which `variant` reaches `loss` (inf when the loss is at or below the floor)."""
        if loss <= self.floor:
            return math.inf
        x = math.log(self.coefficient[variant] / (loss - self.floor)) / self.exponent[variant]
        return math.exp(x + self.log_flops_ref)


@dataclass(frozen=True)
class Interval:
    median: float
    low: float
    high: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True)
class Backtest:
    """The fit without the largest rung, predicting the largest rung's paired difference."""

    predicted: Interval
    measured: float
    """The mean over seeds of the variant's loss minus the baseline's at the largest rung."""

    @property
    def inside(self) -> bool:
        return self.predicted.contains(self.measured)


@dataclass(frozen=True)
class VariantVerdict:
    """One variant against the baseline at the target."""

    variant: str
    delta: Interval
    """Delta = L_variant - L_baseline at the target's FLOPs (nats; below 0: the variant is better)."""
    p_better: float
    """P(Delta < 0) over the resamples."""
    p_worse: float
    multiplier: Interval
    """Baseline compute needed for the variant's loss at the target, over the target's compute (> 1: the
    variant is worth that much more compute)."""
    verdict: Verdict
    backtest: Backtest | None
    """None with too few rungs to leave one out."""


@dataclass(frozen=True)
class LadderResult:
    law: Law
    target_flops: float
    extrapolation_factor: float
    """Target FLOPs over the largest rung's (the baseline's)."""
    floor_fitted: bool
    resamples: int
    variants: tuple[VariantVerdict, ...]
    warnings: tuple[str, ...] = field(default_factory=tuple)


# --- the fit -----------------------------------------------------------------------------------------------


def _huber(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    small = np.abs(r) <= HUBER_DELTA
    value = np.where(small, 0.5 * r * r, HUBER_DELTA * (np.abs(r) - 0.5 * HUBER_DELTA))
    slope = np.where(small, r, HUBER_DELTA * np.sign(r))
    return value, slope


class _Problem:
    """The Huber objective over points, with its gradient; parameters: [E?] + [log A_v, alpha_v] per variant."""

    def __init__(self, variants: Sequence[str], index: np.ndarray, x: np.ndarray, y: np.ndarray, floor: float | None):
        self.variants, self.index, self.x, self.log_y = list(variants), index, x, np.log(y)
        self.fixed_floor = floor
        self.y_min = float(y.min())

    def unpack(self, theta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        floor = self.fixed_floor if self.fixed_floor is not None else theta[0]
        rest = theta if self.fixed_floor is not None else theta[1:]
        return floor, rest[0::2], rest[1::2]

    def objective(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        floor, log_a, alpha = self.unpack(theta)
        u = np.exp(log_a[self.index] - alpha[self.index] * self.x)  # A_v C^-alpha_v
        pred = floor + u
        value, slope = _huber(self.log_y - np.log(pred))
        d_pred = -slope / pred  # d objective / d pred
        grad_log_a = np.bincount(self.index, d_pred * u, minlength=len(self.variants))
        grad_alpha = np.bincount(self.index, -d_pred * u * self.x, minlength=len(self.variants))
        grad = np.empty(2 * len(self.variants))
        grad[0::2], grad[1::2] = grad_log_a, grad_alpha
        if self.fixed_floor is None:
            grad = np.concatenate([[d_pred.sum()], grad])
        return float(value.sum()), grad

    def bounds(self) -> list[tuple[float, float]]:
        per_variant = [(-50.0, 50.0), ALPHA_BOUNDS] * len(self.variants)
        return per_variant if self.fixed_floor is not None else [(0.0, 0.999 * self.y_min), *per_variant]

    def starts(self) -> list[np.ndarray]:
        floors = [self.fixed_floor] if self.fixed_floor is not None else [0.0, 0.5 * self.y_min, 0.9 * self.y_min]
        out = []
        for floor in floors:
            for alpha in (0.1, 0.3, 0.7):
                theta = []
                for v in range(len(self.variants)):
                    mine = self.index == v
                    gap = np.maximum(np.exp(self.log_y[mine]) - floor, 1e-9)
                    theta += [float(np.mean(np.log(gap) + alpha * self.x[mine])), alpha]
                out.append(np.array(theta if self.fixed_floor is not None else [floor, *theta]))
        return out

    def solve(self, starts: Iterable[np.ndarray]) -> np.ndarray:
        best = None
        for start in starts:
            found = minimize(self.objective, start, jac=True, method="L-BFGS-B", bounds=self.bounds())
            if best is None or found.fun < best.fun:
                best = found
        return best.x


def fit_law(points: Sequence[LadderPoint], floor: float | None = None, *, start: Law | None = None) -> Law:
    """The law through `points` (finite losses only). `floor`: hold E there instead of fitting it. `start`: a
    law to start from (a bootstrap refit), instead of the multi-start grid."""
    points = [p for p in points if math.isfinite(p.loss)]
    variants = sorted({p.variant for p in points})
    index = np.array([variants.index(p.variant) for p in points])
    log_c = np.log([p.flops for p in points])
    ref = float(log_c.mean()) if start is None else start.log_flops_ref
    problem = _Problem(variants, index, log_c - ref, np.array([p.loss for p in points]), floor)
    if start is None:
        starts = problem.starts()
    else:
        theta = [v for name in variants for v in (math.log(start.coefficient[name]), start.exponent[name])]
        starts = [np.array(theta if floor is not None else [min(start.floor, 0.99 * problem.y_min), *theta])]
    e, log_a, alpha = problem.unpack(problem.solve(starts))
    return Law(
        floor=float(e),
        coefficient={v: float(math.exp(a)) for v, a in zip(variants, log_a)},
        exponent={v: float(x) for v, x in zip(variants, alpha)},
        log_flops_ref=ref,
    )


# --- the bootstrap and the verdict ----------------------------------------------------------------------------


def _by_seed(points: Sequence[LadderPoint]) -> list[list[LadderPoint]]:
    """The points grouped by seed, in seed order: what a resample draws from."""
    groups: dict[int, list[LadderPoint]] = {}
    for p in points:
        groups.setdefault(p.seed, []).append(p)
    return [groups[seed] for seed in sorted(groups)]


def _resample(by_seed: list[list[LadderPoint]], rng: np.random.Generator) -> list[LadderPoint]:
    """Every point of each seed drawn (with replacement, the same draw for all variants and rungs)."""
    drawn = rng.choice(len(by_seed), size=len(by_seed), replace=True)
    return [p for i in drawn for p in by_seed[i]]


@dataclass(frozen=True)
class _Estimate:
    """A quantity's estimate from the whole ladder and its standard error from the seed bootstrap.

    With the few seeds a ladder affords, the bootstrap's own spread is too narrow: resampling S seeds gives
    only a handful of distinct samples, and its variance is (S - 1) / S of the estimator's. So the standard
    error is the resamples' spread times sqrt(S / (S - 1)), and intervals and probabilities take Student's t
    with S - 1 degrees of freedom, as a paired t-test over S seeds would (tracking/stats/rows.py). The spread
    is read from the interquartile range (IQR / 1.349, a normal's standard deviation), not the standard
    deviation: the resamples that draw one seed S times fit that seed alone, and their extrapolations make a
    heavy tail that widened the standard deviation's interval to 98% coverage for a nominal 90% on simulated
    3-seed ladders (93-94% with the IQR; docs/ladder.md has both). tests/test_ladder.py measures it."""

    value: float
    se: float
    seeds: int

    @classmethod
    def of(cls, value: float, resampled: np.ndarray, seeds: int, noise: float = 0.0) -> _Estimate:
        finite = resampled[np.isfinite(resampled)]
        if len(finite) > 1:
            q1, q3 = np.quantile(finite, [0.25, 0.75])
            # most resamples equal (few seeds, a flat fit): the standard deviation still sees the rest
            scale = float(q3 - q1) / IQR_PER_SD or float(np.std(finite, ddof=1))
            spread = scale * math.sqrt(seeds / (seeds - 1))
        else:
            spread = math.inf
        return cls(value, math.hypot(spread, noise), seeds)

    def interval(self) -> Interval:
        q = student_t.ppf(0.5 + INTERVAL / 2, df=self.seeds - 1) * self.se
        return Interval(self.value, self.value - q, self.value + q)

    def p_below(self, threshold: float = 0.0) -> float:
        if self.se == 0:
            return float(self.value < threshold)
        return float(student_t.cdf((threshold - self.value) / self.se, df=self.seeds - 1))


def _verdict(p_better: float, p_worse: float) -> Verdict:
    if p_better >= VERDICT_PROBABILITY:
        return "holds"
    if p_worse >= VERDICT_PROBABILITY:
        return "flips"
    return "inconclusive"


def _bootstrap_laws(points, floor, law: Law, resamples: int, rng: np.random.Generator) -> list[Law]:
    by_seed = _by_seed(points)  # grouped once: each of the resamples only draws
    laws = []
    for _ in range(resamples):
        sample = _resample(by_seed, rng)
        if len({p.variant for p in sample if math.isfinite(p.loss)}) < len(law.coefficient):
            continue  # every drawn seed of some variant diverged: no curve for it in this resample
        laws.append(fit_law(sample, floor, start=law))
    return laws


def _paired_differences(points: Sequence[LadderPoint], variant: str, baseline: str, rung: int) -> tuple:
    """(the per-seed differences variant - baseline at `rung`, the variant's FLOPs there, the baseline's)."""
    at = {(p.variant, p.seed): p for p in points if p.rung == rung and math.isfinite(p.loss)}
    seeds = sorted(s for (v, s) in at if v == variant and (baseline, s) in at)
    if not seeds:
        return np.array([]), math.nan, math.nan
    diffs = np.array([at[variant, s].loss - at[baseline, s].loss for s in seeds])
    return diffs, at[variant, seeds[0]].flops, at[baseline, seeds[0]].flops


def _pair_spread(points: Sequence[LadderPoint], variant: str, baseline: str, rungs: Sequence[int]) -> float:
    """The standard deviation of one seed's paired difference about its rung's mean, pooled over `rungs`: the
    noise a measured difference carries, which a prediction of it must carry too."""
    squares, dof = 0.0, 0
    for rung in rungs:
        diffs = _paired_differences(points, variant, baseline, rung)[0]
        squares += float(((diffs - diffs.mean()) ** 2).sum()) if len(diffs) else 0.0
        dof += max(len(diffs) - 1, 0)
    return math.sqrt(squares / dof) if dof else 0.0


def _backtest(points, variant: str, baseline: str, rungs: Sequence[int], law: Law, laws: list[Law]) -> Backtest:
    """The largest rung's measured paired difference against its prediction by `law` (fitted without it, `laws`
    its resamples): the curve's difference at each side's FLOPs there, with the curve's uncertainty and the noise
    of a mean over as many paired seeds (the spread measured on the smaller rungs), so that the interval is one
    a measurement falls in."""
    diffs, c_v, c_b = _paired_differences(points, variant, baseline, rungs[-1])
    noise = _pair_spread(points, variant, baseline, rungs[:-1]) / math.sqrt(max(len(diffs), 1))
    curve = np.array([lw.loss(variant, c_v) - lw.loss(baseline, c_b) for lw in laws])
    centre = float(law.loss(variant, c_v) - law.loss(baseline, c_b))
    predicted = _Estimate.of(centre, curve, _seed_count(points), noise).interval()
    return Backtest(predicted=predicted, measured=float(diffs.mean()) if len(diffs) else math.nan)


def _seed_count(points: Sequence[LadderPoint]) -> int:
    return len({p.seed for p in points})


def _held_floor(rungs: int, floor: float | None) -> float | None:
    """None when the floor is fitted (enough rungs and none given), else the value it is held at."""
    return None if rungs >= MIN_RUNGS_FOR_FLOOR and floor is None else (floor or 0.0)


def analyse_ladder(
    points: Sequence[LadderPoint],
    *,
    baseline: str,
    target_flops: float,
    floor: float | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> LadderResult:
    """Fit, bootstrap, verdict and backtest of a ladder's points (every variant at every rung, several seeds)."""
    warnings = []
    diverged = [p for p in points if not math.isfinite(p.loss)]
    if diverged:
        where = sorted({f"{p.variant} rung {p.rung}" for p in diverged})
        warnings.append(f"{len(diverged)} diverged trial(s) left out of the fit: {', '.join(where)}")
    rungs = sorted({p.rung for p in points})
    if _seed_count(points) < 2:
        raise ValueError("a ladder needs at least 2 seeds: its uncertainty comes from resampling them")
    if len(rungs) < MIN_RUNGS:
        raise ValueError(f"a ladder needs at least {MIN_RUNGS} rungs to fit a curve; it has {len(rungs)}")
    variants = sorted({p.variant for p in points})
    if baseline not in variants:
        raise ValueError(f"the ladder has no {baseline!r} trials to compare with")
    held = _held_floor(len(rungs), floor)
    fit_floor = held is None
    if not fit_floor:
        warnings.append(
            f"the floor E is held at {held:g}, not fitted: {len(rungs)} rungs"
            + ("" if floor is None else " (set by the grid)")
            + f"; {MIN_RUNGS_FOR_FLOOR} or more let the ladder fit it"
        )
    rng = np.random.default_rng(seed)
    law = fit_law(points, held)
    if fit_floor and law.floor < 1e-6:
        at_target = float(law.loss(baseline, target_flops))
        warnings.append(
            "the floor E was fitted at 0, its bound: the rungs show no floor, so the law is a pure power law; "
            f"it puts the baseline's loss at the target at {at_target:.3g} nats, and any difference there shrinks "
            "with it: read the sign of Delta, not its size"
        )
    for v in variants:
        if min(abs(law.exponent[v] - b) for b in ALPHA_BOUNDS) < 0.01 * ALPHA_BOUNDS[1]:
            warnings.append(f"{v}: its exponent {law.exponent[v]:.3g} is at the search range's bound {ALPHA_BOUNDS}")
    laws = _bootstrap_laws(points, held, law, resamples, rng)
    reduced = [p for p in points if p.rung != rungs[-1]]
    backtest_laws, reduced_law = [], None
    if len(rungs) - 1 >= MIN_RUNGS:
        # Too few rungs left to fit the floor: it keeps the whole ladder's (fitted or given), so that the smaller
        # rungs decide the curves' shape, not a floor of 0 the whole ladder contradicts.
        reduced_floor = law.floor if len(rungs) - 1 < MIN_RUNGS_FOR_FLOOR else _held_floor(len(rungs) - 1, floor)
        reduced_law = fit_law(reduced, reduced_floor)
        backtest_laws = _bootstrap_laws(reduced, reduced_floor, reduced_law, max(200, resamples // 5), rng)
    largest = max(p.flops for p in points if p.variant == baseline)
    seeds = _seed_count(points)
    results = []
    for v in variants:
        if v == baseline:
            continue

        def delta_of(lw: Law) -> float:
            return float(lw.loss(v, target_flops) - lw.loss(baseline, target_flops))

        def log_multiplier_of(lw: Law) -> float:
            return math.log(lw.compute_for_loss(baseline, float(lw.loss(v, target_flops))) / target_flops)

        delta_estimate = _Estimate.of(delta_of(law), np.array([delta_of(lw) for lw in laws]), seeds)
        log_multiplier = _Estimate.of(log_multiplier_of(law), np.array([log_multiplier_of(lw) for lw in laws]), seeds)
        p_better, p_worse = delta_estimate.p_below(0.0), 1.0 - delta_estimate.p_below(0.0)
        delta = delta_estimate.interval()
        logs = log_multiplier.interval()
        multiplier = Interval(*(math.exp(x) for x in (logs.median, logs.low, logs.high)))
        if abs(delta.median) > 0 and delta.high - delta.low > WIDE_INTERVAL * abs(delta.median):
            warnings.append(
                f"{v}: the interval of Delta ({delta.low:+.3g}, {delta.high:+.3g}) is over {WIDE_INTERVAL:g}x "
                f"its median {delta.median:+.3g}: the ladder cannot tell at this extrapolation"
            )
        backtest = _backtest(points, v, baseline, rungs, reduced_law, backtest_laws) if backtest_laws else None
        if backtest is not None:
            measured = backtest.measured
            if not backtest.inside:
                warnings.append(
                    f"{v}: the backtest failed: fitted without the largest rung it predicted "
                    f"{backtest.predicted.median:+.4f} ({backtest.predicted.low:+.4f}, {backtest.predicted.high:+.4f})"
                    f" there, and {measured:+.4f} was measured"
                )
        results.append(
            VariantVerdict(
                variant=v,
                delta=delta,
                p_better=p_better,
                p_worse=p_worse,
                multiplier=multiplier,
                verdict=_verdict(p_better, p_worse),
                backtest=backtest,
            )
        )
    return LadderResult(
        law=law,
        target_flops=target_flops,
        extrapolation_factor=target_flops / largest,
        floor_fitted=fit_floor,
        resamples=len(laws),
        variants=tuple(results),
        warnings=tuple(warnings),
    )
