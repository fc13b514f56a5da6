"""A `seeds:` grid's comparisons judged from results: the plan (seeds per comparison) and the verdicts, replayed
from what the ledger holds. One implementation for the driver (grid/dispatch/adaptive.py chooses seeds by it,
`gatelab status` prints its verdicts) and the report (tracking/stats/forest.py draws its verdicts and intervals), so
the two can never disagree. No torch, no MLflow: results come in as plain values.

A comparison is one variant against the baseline under one condition (grid/spec/seed_policy.py forms them),
with its trials by seed; a trial needs only a `key` and a `label`. Its planned seed count starts at the
policy's `min`; whenever its pairs up to that count are all in and the verdict (tracking/stats/sequential.py) is
still open, it grows by one, up to `max`. A pair whose trial failed, diverged or lacks the metric blocks its
comparison (no more seeds for it) and is said so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gatelab.tracking.stats.pairs import paired_differences, paired_value, seed_values
from gatelab.tracking.stats.sequential import SeedRule, Verdict, judge
from gatelab.trainer.config.outcome import DONE_STATUSES, Status


@dataclass
class ComparisonState:
    """Where one comparison stands."""

    planned: int
    """Seeds it runs now (min at the start, one more per open wave)."""
    pairs: list[float] = field(default_factory=list)
    """Paired differences (variant - baseline) of its complete seeds, in seed order."""
    verdict: Verdict = Verdict.OPEN
    blocked: str | None = None
    """Why no more seeds can help (a trial failed, diverged or lacks the metric)."""
    judgement: object = None


def replay(rule: SeedRule, comps: list[Any], results: Mapping[str, tuple[str, float]]) -> dict[str, ComparisonState]:
    """Every comparison's state from the results (trial key -> (status, metric value)): waves are replayed
    until nothing changes, so the same results always give the same plan and verdicts. `comps`: objects with
    `name` and the `variant` and `baseline` trials by seed."""
    states = {c.name: ComparisonState(planned=rule.min) for c in comps}
    while True:
        for comp in comps:
            state = states[comp.name]
            state.pairs, state.blocked = _pairs(comp, state.planned, results)
        verdicts = judge({name: state.pairs for name, state in states.items()}, rule)
        grown = False
        for name, state in states.items():
            state.judgement, state.verdict = verdicts[name], verdicts[name].verdict
            waiting = len(state.pairs) < state.planned
            if state.verdict == Verdict.OPEN and not waiting and not state.blocked and state.planned < rule.max:
                state.planned += 1
                grown = True
        if not grown:
            return states


def _pairs(comp: Any, planned: int, results: Mapping[str, tuple[str, float]]) -> tuple[list[float], str | None]:
    """Paired differences of the first complete seeds below `planned`, and what blocks the next pair."""
    pairs = []
    for seed in range(planned):
        trials = [comp.variant.get(seed), comp.baseline.get(seed)]
        outcomes = [results.get(t.key) if t else None for t in trials]
        if any(o is None or o[0] not in (*DONE_STATUSES, Status.FAILED) for o in outcomes):
            return pairs, None  # not run yet, or running
        for trial, (status, value) in zip(trials, outcomes):
            if paired_value(status, value) is None:  # the rule of a pair: tracking/stats/pairs.py
                return pairs, f"{trial.key} ({trial.label}) {status}"
        pairs.append(outcomes[0][1] - outcomes[1][1])
    return pairs, None


def ledger_results(metric: str, records: Mapping[str, Any], retry_failed: bool = False) -> dict[str, tuple[str, float]]:
    """Trial key -> (status, `metric`) of every ended trial (failed ones left out when they are to be retried).
    `records`: trial key -> anything with `status` and `metrics` (a ledger record, a report's TrialOutcome)."""
    return {
        key: (record.status, float(record.metrics.get(metric, math.nan)))
        for key, record in records.items()
        if record.status in DONE_STATUSES or (record.status == Status.FAILED and not retry_failed)
    }


def comparison_differences(comp: Any, records: Mapping[str, Any], metric: str) -> dict[int, float]:
    """Seed -> variant - baseline of `metric` over every seed that forms a pair (tracking/stats/pairs.py), in
    seed order: what `gatelab plan` estimates a comparison's noise from. `records`: trial key -> anything with
    `status` and `metrics` (a ledger record)."""

    def side(trials: Mapping[int, Any]) -> dict[int, float]:
        return seed_values(
            (seed, records[t.key].status, float(records[t.key].metrics.get(metric, math.nan)))
            for seed, t in trials.items()
            if t.key in records
        )

    return paired_differences(side(comp.variant), side(comp.baseline))
