"""Adaptive seeds: which seeds of a `seeds:` grid to run, decided from the results the ledger holds.

Each comparison is one variant against the baseline under one condition (the values of the grid's other axes),
on paired seeds; how its planned seed count grows and how it is judged is tracking/stats/seed_plan.py, shared with the
report. The baseline of a condition runs as many seeds as its comparisons plan. Everything is derived again from
the ledger's results after every result, so a killed driver resumes where it was, a resubmit of a decided grid
starts nothing, and `gatelab status` shows the same verdicts as the driver.

A pair whose trial failed, diverged or lacks the metric blocks its comparison (no more seeds for it) and is
said so; `gatelab resume` retries failed trials.
"""

from __future__ import annotations

import math
from collections import Counter

from gatelab.grid.dispatch.loop import DispatchLoop, Sent
from gatelab.grid.dispatch.ray_jobs import experiment_name, job_for
from gatelab.grid.spec.expand import Trial
from gatelab.grid.spec.seed_policy import Comparison, SeedPolicy, comparisons
from gatelab.tracking.runs.ledger import trial_records_for_key
from gatelab.tracking.stats import seed_plan
from gatelab.tracking.stats.seed_plan import ComparisonState
from gatelab.tracking.stats.sequential import SeedRule, Verdict
from gatelab.trainer.config.outcome import Status, TrialResult
from gatelab.trainer.config.run_tags import SEEDS_TAG


def rule_of(policy: SeedPolicy) -> SeedRule:
    return SeedRule(min=policy.min, max=policy.max, margin=policy.margin, alpha=policy.alpha)


def replay(
    policy: SeedPolicy, comps: list[Comparison], results: dict[str, tuple[str, float]]
) -> dict[str, ComparisonState]:
    """Every comparison's state from the results (trial key -> (status, metric value)), tracking/stats/seed_plan.py."""
    return seed_plan.replay(rule_of(policy), comps, results)


def needed(comps: list[Comparison], states: dict[str, ComparisonState]) -> list[Trial]:
    """The trials the current plan needs, each once, in seed order (the earliest waves first)."""
    wanted: dict[str, Trial] = {}
    for comp in comps:
        planned = states[comp.name].planned
        for seeds in (comp.baseline, comp.variant):
            for seed in range(planned):
                if seed in seeds:
                    wanted.setdefault(seeds[seed].key, seeds[seed])
    return sorted(wanted.values(), key=lambda t: t.config.seed)


def verdict_line(name: str, state: ComparisonState, metric: str) -> str:
    j = state.judgement
    shown = str(state.verdict) if not state.blocked else f"blocked by {state.blocked}"
    if j is None or len(state.pairs) < 2:
        return f"{name}: {shown}, {len(state.pairs)} paired seeds"
    return (
        f"{name}: {shown}, {len(state.pairs)} paired seeds, {metric} difference {j.mean:+.4g} "
        f"[{j.ci[0]:+.4g}, {j.ci[1]:+.4g}]"
    )


def ledger_results(policy: SeedPolicy, records: dict, retry_failed: bool = False) -> dict[str, tuple[str, float]]:
    """Trial key -> (status, the policy's metric) of every ended trial in the ledger (tracking/stats/seed_plan.py)."""
    return seed_plan.ledger_results(policy.metric, records, retry_failed)


def verdict_rows(policy: SeedPolicy, trials: list[Trial], records: dict) -> list[dict]:
    """Each comparison's verdict, seeds and difference as the ledger stands (`gatelab status`)."""
    comps = comparisons(trials)
    states = replay(policy, comps, ledger_results(policy, records))
    rows = []
    for comp in comps:
        state, j = states[comp.name], states[comp.name].judgement
        rows.append(
            {
                "comparison": comp.name,
                "verdict": "blocked" if state.blocked else str(state.verdict),
                "blocked_by": state.blocked,
                "seeds": len(state.pairs),
                "planned": state.planned,
                "mean_difference": j.mean if j and state.pairs else None,
                "ci": list(j.ci) if j and len(state.pairs) >= 2 else None,
                "p_different": j.p_different if j else None,
                "line": verdict_line(comp.name, state, policy.metric),
            }
        )
    return rows


class AdaptiveSeeds:
    """The chooser of a `seeds:` grid on the dispatch loop."""

    def __init__(self, spec, store, uri, parent, trials, records, retry_failed: bool, out) -> None:
        self.spec, self.store, self.uri, self.parent, self.out = spec, store, uri, parent, out
        self.policy: SeedPolicy = spec.seeds
        self.comps = comparisons(trials)
        self.results = ledger_results(self.policy, records, retry_failed)
        self.statuses: dict[str, str] = {key: status for key, (status, _) in self.results.items()}
        self.timings: dict[str, dict] = {}
        self.states = replay(self.policy, self.comps, self.results)

    def more(self, loop: DispatchLoop) -> bool:
        queued = False
        for trial in needed(self.comps, self.states):
            if trial.key not in self.results and not loop.has(trial.key):
                job = job_for(self.spec, self.store, self.uri, self.parent, trial, **{SEEDS_TAG: "adaptive"})
                loop.enqueue(job, label=trial.label)
                queued = True
        return queued

    def delivered(self, loop: DispatchLoop, sent: Sent, result: TrialResult) -> None:
        key = sent.job.key
        self.statuses[key] = result.status
        self.timings[key] = {"wall_s": sent.wall_s(), **result.timings}
        line = f"  {result.status:9} {key} {sent.label}"
        if result.error:
            line += f"\n{result.error.rstrip()}"
        self.out(line)
        if result.status == Status.BUSY:
            return  # another process runs it; its result reaches the ledger and the next submit
        value = result.summary.get(self.policy.metric, math.nan) if not result.skipped else math.nan
        if result.skipped:  # done before: the ledger has its value
            record = trial_records_for_key(self.uri, experiment_name(self.spec), key)
            value = float(record.metrics.get(self.policy.metric, math.nan)) if record else math.nan
        self.results[key] = (result.status, float(value))
        before = {name: (s.verdict, s.blocked) for name, s in self.states.items()}
        self.states = replay(self.policy, self.comps, self.results)
        for name, state in self.states.items():
            if (state.verdict, state.blocked) != before[name] and (state.verdict != Verdict.OPEN or state.blocked):
                self.out("  verdict   " + verdict_line(name, state, self.policy.metric))

    def poll(self, loop: DispatchLoop) -> None:
        pass

    def headline(self) -> str:
        counts = Counter(str(s.verdict) if not s.blocked else "blocked" for s in self.states.values())
        return f"seeds {self.spec.name}: " + ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))

    def interrupted(self, running: int) -> str:
        return (
            f"{running} running trial(s) stopped; `gatelab resume {self.spec.source}` continues the seed plan from "
            "the ledger"
        )
