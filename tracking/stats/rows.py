"""What a grid report is made of (the trials, the variants, the outcomes read from MLflow) and its statistics:
mean ± std over seeds, the paired comparison against the baseline, the maximum stable learning rate, and the
table's rows. Nothing here talks to MLflow or imports torch: tracking/report/grid_report.py reads the runs and
writes the files.

docs/design.md (Evidence): a variant is "better" in a report only over several seeds, with the test and p-value
printed. So a comparison always says which test it used, on how many seed pairs, and why there is none.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from scipy import stats as scipy_stats

from gatelab.tracking.stats.ladder import LadderTarget
from gatelab.tracking.stats.pairs import paired_differences, seed_values
from gatelab.tracking.stats.sequential import SeedRule
from gatelab.trainer.config.metric_names import (
    F_ATTN,
    FINAL_VAL_LOSS,
    FINAL_VAL_PPL,
    GATE_MEAN,
    M_ACT,
    SPIKE_COUNT,
    long_ppl,
    parse_long_ppl,
)
from gatelab.trainer.config.outcome import DONE_STATUSES, Status

ALPHA = 0.05
"""Significance level under which a paired difference counts as 'better' or 'worse'."""
STABLE_MARGIN = 0.05
"""Default relative margin above a variant's best final loss that still counts as stable."""
"""trainer/evaluate.py's long-context metric names: factor and RoPE mode."""


@dataclass(frozen=True, kw_only=True)
class TrialSpec:
    """One expanded trial of the grid, as the report needs it (built by grid/spec/report_input.py)."""

    key: str
    """Trial key (the child run's `trial_key` tag)."""
    variant: str
    """Catalog variant name."""
    seed: int
    """Seed: comparisons pair trials by it."""
    lr: float
    """Peak learning rate (optim.lr)."""
    condition: str = ""
    """The trial's other axis values (not variant, seed or LR), e.g. 'n_layers=6'; '' when none."""
    label: str = ""
    """Human label of the trial."""
    seq_len: int = 256
    """Training sequence length; long-context factors multiply it."""
    extra_params: int | None = None
    """Parameters its variant adds over the baseline at the trial's own model (its preset and overrides, so a
    row of another depth has another count); None where the variant does not fit that model."""
    flops: float = 0.0
    """Estimated training FLOPs (grid/spec/trial_cost.py), the gate's own included: a ladder's compute axis."""
    rung: int | None = None
    """Its rung in a ladder grid; None in any other grid."""


@dataclass(frozen=True, kw_only=True)
class VariantSpec:
    """A catalog variant and the paper's published figures (its cost is the trials': TrialSpec.extra_params)."""

    name: str
    """Catalog name."""
    paper_ref: str
    """Where the paper defines it (table and row) or 'extension'."""
    gated: bool
    """Whether it has a gate (F-Attn figure, gate histograms)."""
    paper_added_params_m: float | None = None
    """Table 1 'Added Param' (M) at the 15A2B MoE."""
    paper_ppl: float | None = None
    """Avg PPL of the 15A2B MoE (Table 1 / Table 3)."""
    paper_gate_mean: float | None = None
    """Mean gate score (Table 4)."""
    paper_m_act: float | None = None
    """M-Act (Table 4)."""
    paper_f_attn: float | None = None
    """F-Attn (Table 4)."""
    axes: dict = field(default_factory=dict)
    """The variant's design axes (`Variant.axes`: gate_position, gate_granularity, ...); the forest plot groups
    by them."""


@dataclass(frozen=True, kw_only=True)
class ReportInput:
    """What to report on: the grid's trials, its variants and where its runs live."""

    grid: str
    """Grid name (the parent run's `gatelab.grid` tag)."""
    experiment: str
    """MLflow experiment of the grid."""
    preset: str
    """The grid's base model preset (extra parameters are counted there)."""
    trials: tuple[TrialSpec, ...]
    """Every trial of the expanded grid."""
    variants: dict = field(default_factory=dict)
    """Variant name -> VariantSpec, in catalog order (the table's row order)."""
    baseline: str = "baseline"
    """The variant every other one is compared with."""
    margin: float = STABLE_MARGIN
    """Relative margin above the best loss that still counts as a stable LR."""
    seed_rule: SeedRule | None = None
    """A `seeds:` grid's policy as the verdicts use it; None for a grid with fixed seeds."""
    seed_metric: str = FINAL_VAL_LOSS
    """The summary metric a `seeds:` grid compares (its policy's `metric`)."""
    notes: tuple[str, ...] = ()
    """Paragraphs the grid side adds under the results table (what a zip grid's tied axes were per trial)."""
    ladder: LadderTarget | None = None
    """A ladder grid's target and fit settings (tracking/stats/ladder.py); None for any other grid."""
    comparisons: tuple = ()
    """A `seeds:` grid's comparisons exactly as its driver forms them (grid/spec/seed_policy.py), with this
    report's TrialSpecs by seed: tracking/stats/seed_plan.py judges them for the forest plot."""


@dataclass(frozen=True, kw_only=True)
class TrialOutcome:
    """One trial as stored in MLflow."""

    trial: TrialSpec
    """The trial."""
    status: str
    """gatelab.status, or 'new' when it has no run yet."""
    run_id: str | None
    """Its child run, if any."""
    metrics: dict
    """Latest value of every metric."""
    history: dict
    """Metric key -> [(step, value)] for HISTORIES (done trials only)."""
    gate_hist: tuple | None = None
    """probes.json gate_hist_counts (20 bins + under/overflow), when the artifact could be read."""


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


def mean_of(stat: MeanStd | None) -> float | None:
    """The mean, or None where nothing was measured."""
    return stat.mean if stat else None


def mean_std(values: Iterable[float]) -> MeanStd | None:
    """Mean ± sample std of the finite values; None when there is none."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return None
    std = statistics.stdev(finite) if len(finite) > 1 else None
    return MeanStd(mean=statistics.fmean(finite), std=std, n=len(finite))


def outcome_seed_values(outcomes: Iterable[TrialOutcome], metric: str) -> dict[int, float]:
    """Seed -> the paired value of `metric` (tracking/stats/pairs.py) of one side's trial outcomes."""
    return seed_values((o.trial.seed, o.status, float(o.metrics.get(metric, math.nan))) for o in outcomes)


def paired_comparison(variant: Mapping[int, float], baseline: Mapping[int, float]) -> PairedComparison:
    """Compare per-seed values (lower is better), pairing equal seeds; a paired t-test
    (scipy.stats.ttest_rel) needs >= 2 pairs. Non-finite values are left out of the pairs."""
    paired = paired_differences(variant, baseline)
    seeds = sorted(paired)
    if not seeds:
        why = (
            "no seeds in common with the baseline"
            if not set(variant) & set(baseline)
            else "no finite pairs with the baseline"
        )
        return PairedComparison(n_pairs=0, mean_diff=None, test=why, statistic=None, p_value=None)
    diffs = [paired[s] for s in seeds]
    mean_diff = statistics.fmean(diffs)
    if len(seeds) == 1:
        return PairedComparison(n_pairs=1, mean_diff=mean_diff, test="n=1, no test", statistic=None, p_value=None)
    if max(diffs) == min(diffs):  # t is undefined (0/0 or +-inf) when every pair differs by the same amount
        statistic = 0.0 if diffs[0] == 0 else math.copysign(math.inf, diffs[0])
        return PairedComparison(
            n_pairs=len(seeds), mean_diff=mean_diff, test="paired t-test", statistic=statistic, p_value=None
        )
    result = scipy_stats.ttest_rel([variant[s] for s in seeds], [baseline[s] for s in seeds])
    return PairedComparison(
        n_pairs=len(seeds),
        mean_diff=mean_diff,
        test="paired t-test",
        statistic=float(result.statistic),
        p_value=float(result.pvalue),
    )


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
    finite = [
        loss for runs in by_lr.values() for status, loss in runs if status == Status.FINISHED and math.isfinite(loss)
    ]
    if not finite:
        return None
    ceiling = min(finite) * (1 + margin) if min(finite) >= 0 else min(finite) * (1 - margin)
    stable = [
        lr
        for lr, runs in by_lr.items()
        if all(status == Status.FINISHED and math.isfinite(loss) and loss <= ceiling for status, loss in runs)
    ]
    return max(stable, default=None)


def best_lr(results: Iterable[tuple[float, str, float]]) -> float | None:
    """The LR whose finished results have the lowest mean final loss, preferring LRs where no result diverged;
    None when no LR has a finite finished result."""
    by_lr: dict[float, list[float]] = {}
    bad: set[float] = set()
    for lr, status, loss in results:
        if status == Status.DIVERGED or (status == Status.FINISHED and not math.isfinite(loss)):
            bad.add(float(lr))
        elif status == Status.FINISHED:
            by_lr.setdefault(float(lr), []).append(float(loss))
    means = {lr: statistics.fmean(losses) for lr, losses in by_lr.items()}
    return min(means, key=lambda lr: (lr in bad, means[lr], lr)) if means else None


# --- rows of the report table -----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class VariantRow:
    """One row of the table: a variant (under one condition) summarised over seeds."""

    variant: VariantSpec
    """The variant."""
    condition: str
    """Other axis values of the row ('' when the grid has none)."""
    lr: float | None
    """The LR the row's figures are at (the best LR) when the grid sweeps LRs; else None."""
    extra_params: int | None
    """Parameters the variant adds over the baseline at the row's model (its trials' TrialSpec.extra_params)."""
    trials: tuple[TrialOutcome, ...]
    """The done trials the row's figures come from."""
    n_diverged: int
    """Of those, how many diverged."""
    ppl: MeanStd | None
    """Final validation PPL over finished seeds."""
    comparison: PairedComparison | None
    """PPL against the baseline, paired by seed; None for the baseline itself."""
    spikes: MeanStd | None
    """Loss spikes per trial."""
    max_stable_lr: float | None
    """Largest stable LR of the sweep (max_stable_lr); None without one or without a sweep."""
    f_attn: MeanStd | None
    """First-token attention share."""
    m_act: MeanStd | None
    """Mean over layers of max |hidden|."""
    gate_mean: MeanStd | None
    """Mean gate score (gated variants)."""
    long_ratio: dict
    """'rope'|'yarn' -> MeanStd of PPL at the long factor / PPL at 1x."""


def sweeps_lr(inp: ReportInput) -> bool:
    """Whether some row (variant and condition) was trained at several LRs: an LR sweep, whose best LR a row
    reports. A ladder whose rule gives each rung its own LR sweeps nothing."""
    return len({(t.variant, t.condition, t.lr) for t in inp.trials}) > len(
        {(t.variant, t.condition) for t in inp.trials}
    )


def final_loss(outcome: TrialOutcome) -> float:
    return float(outcome.metrics.get(FINAL_VAL_LOSS, math.nan))


def long_factor(outcomes: Iterable[TrialOutcome]) -> int | None:
    """The long-context factor of the ratio columns: 4 (the paper's YaRN extension, 32k -> 128k) when
    measured, else the largest measured factor above 1."""
    factors = {parsed[0] for o in outcomes for k in o.metrics if (parsed := parse_long_ppl(k))}
    if 1 not in factors or not factors - {1}:
        return None
    return 4 if 4 in factors else max(factors - {1})


def build_rows(inp: ReportInput, outcomes: list[TrialOutcome]) -> list[VariantRow]:
    """One row per (variant, condition) with at least one trial, in catalog order."""
    sweep = sweeps_lr(inp)
    factor = long_factor(outcomes)
    groups: dict[tuple[str, str], list[TrialOutcome]] = {}
    order = {name: i for i, name in enumerate(inp.variants)}
    for outcome in sorted(outcomes, key=lambda o: order.get(o.trial.variant, len(order))):
        groups.setdefault((outcome.trial.variant, outcome.trial.condition), []).append(outcome)
    chosen: dict[tuple[str, str], tuple[float | None, list[TrialOutcome], float | None]] = {}
    for key, group in groups.items():
        done = [o for o in group if o.status in DONE_STATUSES]
        results = [(o.trial.lr, o.status, final_loss(o)) for o in done]
        lr = best_lr(results) if sweep else None
        stable = max_stable_lr(results, inp.margin) if sweep else None
        chosen[key] = (lr, [o for o in done if not sweep or o.trial.lr == lr], stable)

    def seed_ppl(trials: list[TrialOutcome]) -> dict[int, float]:
        return outcome_seed_values(trials, FINAL_VAL_PPL)

    rows = []
    for (name, condition), (lr, trials, stable) in chosen.items():
        variant = inp.variants[name]
        finished = [o for o in trials if o.status == Status.FINISHED]
        baseline = chosen.get((inp.baseline, condition))
        comparison = None
        if name != inp.baseline:
            comparison = (
                paired_comparison(seed_ppl(trials), seed_ppl(baseline[1]))
                if baseline
                else PairedComparison(
                    n_pairs=0, mean_diff=None, test="no baseline in the grid", statistic=None, p_value=None
                )
            )
        rows.append(
            VariantRow(
                variant=variant,
                condition=condition,
                lr=lr,
                extra_params=groups[name, condition][0].trial.extra_params,
                trials=tuple(trials),
                n_diverged=sum(o.status == Status.DIVERGED for o in trials),
                ppl=mean_std(seed_ppl(trials).values()),
                comparison=comparison,
                spikes=mean_std(o.metrics.get(SPIKE_COUNT, math.nan) for o in trials),
                max_stable_lr=stable,
                f_attn=mean_std(o.metrics.get(F_ATTN, math.nan) for o in finished),
                m_act=mean_std(o.metrics.get(M_ACT, math.nan) for o in finished),
                gate_mean=mean_std(o.metrics.get(GATE_MEAN, math.nan) for o in finished),
                long_ratio={rope: mean_std(_ratio(o, factor, rope) for o in finished) for rope in ("rope", "yarn")}
                if factor
                else {},
            )
        )
    return rows


def _ratio(outcome: TrialOutcome, factor: int, rope: str) -> float:
    long, short = outcome.metrics.get(long_ppl(factor, rope)), outcome.metrics.get(long_ppl(1, rope))
    return long / short if long is not None and short else math.nan


def row_name(row: VariantRow) -> str:
    """The row's variant name, with its condition when it has one."""
    return f"{row.variant.name} [{row.condition}]" if row.condition else row.variant.name
