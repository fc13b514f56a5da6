"""The numbers behind the report's answer figures: each variant's paired difference to the baseline with its
interval and verdict (the forest plot), and the validation-loss gap along training (the difference curves).
No MLflow, no matplotlib: tracking/report/grid_report.py reads the runs, tracking/report/comparison_figures.py draws.

Differences are paired by seed: variant seed i minus baseline seed i under the same condition (same data order
and initialisation stream; tracking/stats/rows.py `paired_differences`). Two ways to judge them:

- a `seeds:` grid: exactly the driver's verdicts and intervals, replayed from the runs through
  tracking/stats/seed_plan.py (alpha spent over the planned looks, Holm over the comparisons, TOST for
  'equivalent'; tracking/stats/sequential.py);
- a grid with fixed seeds: a paired t-interval per variant and Holm's step-down correction over all of the
  grid's tested comparisons. Each interval is at the level Holm tested that comparison at (alpha / (m - rank)
  for the rejected ones, alpha / (m - number rejected) for the rest), so it excludes 0 exactly when the verdict
  is 'different'.

The paper's difference beside ours comes from Table 1 / Table 3 Avg PPL of the 15A2B MoE: in loss units
ln(PPL_variant / PPL_baseline) (PPL = exp(loss); the paper's Avg PPL averages several test sets, so this is
the loss difference only approximately), in PPL units PPL_variant - PPL_baseline.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from scipy import stats as scipy_stats

from gatelab.tracking.stats.pairs import paired_differences
from gatelab.tracking.stats.rows import ALPHA, ReportInput, TrialOutcome, VariantRow, outcome_seed_values, row_name
from gatelab.tracking.stats.seed_plan import ledger_results, replay
from gatelab.tracking.stats.sequential import holm, t_p_values
from gatelab.trainer.config.metric_names import FINAL_VAL_LOSS, FINAL_VAL_PPL, VAL_LOSS
from gatelab.trainer.config.outcome import Status

FAMILIES = ("position", "granularity", "activation", "controls", "other")
"""The forest plot's groups, in order: the paper's questions (Table 1: where the gate sits and how fine it is;
Tables 3-4: which non-linearity and input; the controls: parameter-matched baselines and SDPA-output controls)."""

DIFFERENT, NOT_SIGNIFICANT, NOT_TESTED = "different", "not significant", "not tested"


def family(axes: Mapping[str, str]) -> str:
    """A variant's group from its design axes (`Variant.axes`): what it changes against G1 elementwise
    head-specific multiplicative sigmoid on the hidden state, the paper's best gate (Table 1 row 5)."""
    if not axes:
        return "other"
    if axes.get("gate_position", "none") == "none":
        return "controls"  # no gate: a parameter-matched baseline (Table 1 rows 2-4) or an SDPA control (Table 3)
    form = (axes.get("gate_activation"), axes.get("gate_combine"), axes.get("gate_input"))
    if form != ("sigmoid", "multiplicative", "hidden"):
        return "activation"
    if (axes.get("gate_granularity"), axes.get("gate_sharing")) != ("elementwise", "head_specific"):
        return "granularity"
    return "position"


@dataclass(frozen=True, kw_only=True)
class ForestRow:
    """One comparison of the forest plot."""

    label: str
    """The comparison: the variant's name, with its condition when the grid has other axes."""
    variant: str
    condition: str
    family: str
    """One of FAMILIES."""
    n: int
    """Paired seeds."""
    mean: float | None
    """Mean paired difference (variant - baseline); None without pairs."""
    ci: tuple[float, float] | None
    """Confidence interval of the mean; None below 2 pairs."""
    level: float | None
    """The interval's confidence level (see the module's docstring)."""
    verdict: str
    """'different' / 'not significant' / 'not tested' (fixed seeds); the sequential verdicts or 'blocked'."""
    p_value: float | None = None
    """Two-sided p of 'no difference' before Holm: the paired t-test (fixed seeds) or its look-corrected p (a
    `seeds:` grid); None below 2 pairs. The verdict is Holm's over all the comparisons, not this p alone."""
    per_seed: dict
    """Seed -> paired difference."""
    paper: float | None
    """The paper's difference in the same units, where it publishes both figures."""


@dataclass(frozen=True, kw_only=True)
class Forest:
    """What the forest plot shows."""

    metric: str
    """The summary metric compared (final_val_loss unless a `seeds:` policy says otherwise)."""
    method: str
    """How the intervals and verdicts were made, in one sentence."""
    rows: tuple[ForestRow, ...]
    margin: float | None = None
    """A `seeds:` grid's equivalence margin (drawn as a band around 0)."""

    def to_json(self) -> dict:
        return {
            "metric": self.metric,
            "method": self.method,
            "margin": self.margin,
            "rows": [asdict(r) for r in self.rows],
        }


def paper_difference(metric: str, variant_ppl: float | None, baseline_ppl: float | None) -> float | None:
    if variant_ppl is None or baseline_ppl is None:
        return None
    if metric == FINAL_VAL_LOSS:
        return math.log(variant_ppl / baseline_ppl)
    return variant_ppl - baseline_ppl if metric == FINAL_VAL_PPL else None


def forest(inp: ReportInput, rows: list[VariantRow], outcomes: list[TrialOutcome]) -> Forest:
    """The forest plot's rows, grouped by family (FAMILIES order), catalog order within a family."""
    made = _sequential(inp, outcomes) if inp.seed_rule is not None else _fixed(inp, rows)
    order = {name: i for i, name in enumerate(inp.variants)}
    ranked = sorted(made.rows, key=lambda r: (FAMILIES.index(r.family), order.get(r.variant, len(order))))
    return Forest(metric=made.metric, method=made.method, rows=tuple(ranked), margin=made.margin)


def _row(inp: ReportInput, metric: str, variant: str, condition: str, label: str, **kw) -> ForestRow:
    spec, base = inp.variants.get(variant), inp.variants.get(inp.baseline)
    paper = paper_difference(metric, spec.paper_ppl if spec else None, base.paper_ppl if base else None)
    return ForestRow(
        label=label,
        variant=variant,
        condition=condition,
        family=family(spec.axes if spec else {}),
        paper=paper,
        **kw,
    )


def _sequential(inp: ReportInput, outcomes: list[TrialOutcome]) -> Forest:
    rule, metric = inp.seed_rule, inp.seed_metric
    comps = list(inp.comparisons)
    states = replay(rule, comps, ledger_results(metric, {o.trial.key: o for o in outcomes}))
    out = []
    for comp in comps:
        state, j = states[comp.name], states[comp.name].judgement
        some = next(iter(comp.variant.values()))
        n = len(state.pairs)
        out.append(
            _row(
                inp,
                metric,
                some.variant,
                some.condition,
                comp.name,
                n=n,
                mean=j.mean if n else None,
                ci=tuple(j.ci) if n >= 2 else None,
                level=1 - rule.alpha / rule.looks if n >= 2 else None,
                verdict="blocked" if state.blocked else str(state.verdict),
                p_value=j.p_different if n >= 2 else None,
                per_seed=dict(enumerate(state.pairs)),  # the pairs are seeds 0, 1, ... in order (seed_plan._pairs)
            )
        )
    method = (
        f"adaptive seeds, the driver's verdicts: intervals at {1 - rule.alpha / rule.looks:.4g} (alpha "
        f"{rule.alpha:g} spent over {rule.looks} planned looks, before Holm), verdicts after Holm over the "
        f"{len(comps)} comparisons; 'equivalent' = inside +-{rule.margin:g} (TOST)"
    )
    return Forest(metric=metric, method=method, rows=tuple(out), margin=rule.margin)


def _fixed(inp: ReportInput, rows: list[VariantRow]) -> Forest:
    metric = FINAL_VAL_LOSS
    by_key = {(r.variant.name, r.condition): r for r in rows}
    diffs: dict[str, tuple[VariantRow, dict[int, float]]] = {}
    for row in rows:
        base = by_key.get((inp.baseline, row.condition))
        if row.variant.name != inp.baseline and base is not None:
            diffs[row_name(row)] = (
                row,
                paired_differences(outcome_seed_values(row.trials, metric), outcome_seed_values(base.trials, metric)),
            )
    p = {name: t_p_values(list(d.values()), 0.0)[0] for name, (_, d) in diffs.items() if len(d) >= 2}
    adjusted = holm(p)
    levels, rejected = {}, 0
    for rank, name in enumerate(sorted(p, key=p.get)):  # Holm rejects a prefix of the sorted p-values
        if adjusted[name] <= ALPHA:
            rejected = rank + 1
            levels[name] = ALPHA / (len(p) - rank)
        else:
            levels[name] = ALPHA / (len(p) - rejected)
    out = []
    for name, (row, d) in diffs.items():
        values = list(d.values())
        n = len(values)
        mean = statistics.fmean(values) if n else None
        ci = None
        if n >= 2:
            half = scipy_stats.t.ppf(1 - levels[name] / 2, n - 1) * statistics.stdev(values) / math.sqrt(n)
            ci = (mean - half, mean + half)
        verdict = NOT_TESTED if n < 2 else DIFFERENT if adjusted[name] <= ALPHA else NOT_SIGNIFICANT
        level = 1 - levels[name] if n >= 2 else None
        out.append(
            _row(
                inp,
                metric,
                row.variant.name,
                row.condition,
                name,
                n=n,
                mean=mean,
                ci=ci,
                level=level,
                verdict=verdict,
                p_value=p.get(name),
                per_seed=d,
            )
        )
    method = (
        f"fixed seeds: paired t-intervals, Holm over the {len(p)} tested comparisons at family-wise alpha "
        f"{ALPHA:g}, each interval at the level Holm tested it (it excludes 0 exactly when 'different')"
    )
    return Forest(metric=metric, method=method, rows=tuple(out))


# --- the gap along training --------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class GapCurve:
    """A variant's val_loss minus the baseline's at each evaluation step both logged, over its paired seeds."""

    label: str
    family: str
    steps: tuple[int, ...]
    mean: tuple[float, ...]
    """Mean over seeds of the paired difference at each step."""
    se: tuple[float | None, ...]
    """Standard error of that mean over seeds (None with one seed)."""
    n: tuple[int, ...]
    """Seeds at each step."""


def val_loss_gaps(inp: ReportInput, rows: list[VariantRow]) -> list[GapCurve]:
    """One curve per compared row (the row's trials against the baseline's under its condition, paired by
    seed; finished trials only, at steps both logged)."""
    by_key = {(r.variant.name, r.condition): r for r in rows}
    curves = []
    for row in rows:
        base = by_key.get((inp.baseline, row.condition))
        if row.variant.name == inp.baseline or base is None:
            continue
        ours, theirs = _histories(row), _histories(base)
        at_step: dict[int, list[float]] = {}
        for seed in sorted(set(ours) & set(theirs)):
            for step, value in ours[seed].items():
                other = theirs[seed].get(step)
                if other is not None and math.isfinite(value) and math.isfinite(other):
                    at_step.setdefault(step, []).append(value - other)
        if not at_step:
            continue
        steps = sorted(at_step)
        spec = inp.variants.get(row.variant.name)
        curves.append(
            GapCurve(
                label=row_name(row),
                family=family(spec.axes if spec else {}),
                steps=tuple(steps),
                mean=tuple(statistics.fmean(at_step[s]) for s in steps),
                se=tuple(
                    statistics.stdev(at_step[s]) / math.sqrt(len(at_step[s])) if len(at_step[s]) > 1 else None
                    for s in steps
                ),
                n=tuple(len(at_step[s]) for s in steps),
            )
        )
    return curves


def _histories(row: VariantRow) -> dict[int, dict[int, float]]:
    """Seed -> step -> validation loss of the row's finished trials: the evaluations along training, then the
    final evaluation at the last step (trainer/run.py: the same validation batches, so the curve ends at the
    forest plot's per-seed difference)."""
    return {
        o.trial.seed: dict(o.history.get(VAL_LOSS, [])) | dict(o.history.get(FINAL_VAL_LOSS, []))
        for o in row.trials
        if o.status == Status.FINISHED
    }
