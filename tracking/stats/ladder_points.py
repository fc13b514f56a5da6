"""A ladder grid's trial outcomes as the points its fit takes (tracking/stats/ladder.py), and the summary per rung
and variant the report tabulates. Pure: outcomes in, numbers out.

With an LR axis each variant is tuned per rung: the fit takes, per rung and variant, the LR with the best mean
final loss over its finished seeds (the fair comparison: the paper's claim is partly that gates tolerate larger
LRs); its diverged seeds stay in as diverged points, which the fit leaves out and names. Beside it, per rung and
variant, the max stable LR by the sweep rule (tracking/stats/rows.py `max_stable_lr`): how the LR a variant
tolerates moves with size, which a single small-scale sweep cannot show."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from gatelab.tracking.stats.ladder import LadderPoint, LadderResult, LadderTarget, analyse_ladder
from gatelab.tracking.stats.pairs import paired_differences
from gatelab.tracking.stats.rows import TrialOutcome, final_loss, max_stable_lr, outcome_seed_values
from gatelab.trainer.config.metric_names import FINAL_VAL_LOSS
from gatelab.trainer.config.outcome import DONE_STATUSES, Status


def _tuned(outcomes: Sequence[TrialOutcome]) -> list[TrialOutcome]:
    """Per (variant, rung): the done trials at the LR whose finished seeds have the best mean final loss."""
    groups: dict[tuple, dict[float, list[TrialOutcome]]] = {}
    for o in outcomes:
        if o.status in DONE_STATUSES and o.trial.rung is not None:
            groups.setdefault((o.trial.variant, o.trial.rung), {}).setdefault(o.trial.lr, []).append(o)
    chosen = []
    for by_lr in groups.values():

        def mean_loss(trials: list[TrialOutcome]) -> float:
            finished = [final_loss(o) for o in trials if o.status == Status.FINISHED and math.isfinite(final_loss(o))]
            return statistics.fmean(finished) if finished else math.inf

        chosen += min(by_lr.values(), key=mean_loss)
    return chosen


def ladder_points(outcomes: Sequence[TrialOutcome]) -> list[LadderPoint]:
    return [
        LadderPoint(
            o.trial.variant,
            o.trial.rung,
            o.trial.seed,
            o.trial.flops,
            final_loss(o) if o.status == Status.FINISHED else math.nan,
        )
        for o in _tuned(outcomes)
    ]


@dataclass(frozen=True)
class RungRow:
    """One variant at one rung, as the report's ladder table shows it."""

    rung: int
    variant: str
    flops: float
    lr: float
    seeds: int
    diverged: int
    loss_mean: float | None
    loss_sd: float | None
    delta: float | None
    """Mean paired difference to the baseline at this rung (None for the baseline or without pairs)."""
    delta_half_width: float | None
    """Half the 90% paired t-interval of it (None under two pairs)."""


def rung_rows(outcomes: Sequence[TrialOutcome], baseline: str) -> list[RungRow]:
    from scipy.stats import t as student_t

    tuned = _tuned(outcomes)
    cells: dict[tuple, list[TrialOutcome]] = {}
    for o in tuned:
        cells.setdefault((o.trial.rung, o.trial.variant), []).append(o)
    rows = []
    for (rung, variant), trials in sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1] != baseline, kv[0][1])):
        losses = [final_loss(o) for o in trials if o.status == Status.FINISHED and math.isfinite(final_loss(o))]
        delta = half = None
        if variant != baseline and (rung, baseline) in cells:
            diffs = list(
                paired_differences(
                    outcome_seed_values(trials, FINAL_VAL_LOSS),
                    outcome_seed_values(cells[rung, baseline], FINAL_VAL_LOSS),
                ).values()
            )
            if diffs:
                delta = statistics.fmean(diffs)
            if len(diffs) > 1:
                half = student_t.ppf(0.95, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
        rows.append(
            RungRow(
                rung=rung,
                variant=variant,
                flops=trials[0].trial.flops,
                lr=trials[0].trial.lr,
                seeds=len(trials),
                diverged=sum(o.status == Status.DIVERGED for o in trials),
                loss_mean=statistics.fmean(losses) if losses else None,
                loss_sd=statistics.stdev(losses) if len(losses) > 1 else None,
                delta=delta,
                delta_half_width=half,
            )
        )
    return rows


@dataclass(frozen=True)
class RungStableLr:
    """One variant at one rung of a ladder that sweeps LRs: the LRs tried and the largest stable one."""

    rung: int
    variant: str
    flops: float
    """The trials' training FLOPs at this rung (the same for every LR)."""
    lrs: tuple[float, ...]
    max_stable_lr: float | None
    """None: no LR was stable at this rung."""

    @property
    def metric_name(self) -> str:
        """Its name on the grid's parent run."""
        return f"max_stable_lr.{self.variant}.rung{self.rung}"


def rung_stable_lrs(outcomes: Sequence[TrialOutcome]) -> list[RungStableLr]:
    """Per rung and variant, the max stable LR, when the ladder tunes LRs (some cell has more than one); else []."""
    cells: dict[tuple, list[TrialOutcome]] = {}
    for o in outcomes:
        if o.trial.rung is not None:
            cells.setdefault((o.trial.rung, o.trial.variant), []).append(o)
    if all(len({o.trial.lr for o in trials}) < 2 for trials in cells.values()):
        return []
    return [
        RungStableLr(
            rung=rung,
            variant=variant,
            flops=trials[0].trial.flops,
            lrs=tuple(sorted({o.trial.lr for o in trials})),
            max_stable_lr=max_stable_lr((o.trial.lr, o.status, final_loss(o)) for o in trials),
        )
        for (rung, variant), trials in sorted(cells.items())
    ]


def analyse(points: Sequence[LadderPoint], baseline: str, target: LadderTarget) -> LadderResult:
    return analyse_ladder(
        points,
        baseline=baseline,
        target_flops=target.target_flops,
        floor=target.floor,
        resamples=target.resamples,
    )
