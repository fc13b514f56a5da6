"""What a pair is (tracking/stats/pairs.py), decided once: a seed at which both the variant and the baseline
FINISHED with a finite value. The report, `gatelab plan` and a `seeds:` grid's plan read one ledger alike; only
the sequential plan, which takes seeds in order, stops at the first seed without a pair."""

import math
from types import SimpleNamespace

from gatelab.tracking.stats.pairs import paired_differences, paired_value, seed_values
from gatelab.tracking.stats.rows import outcome_seed_values
from gatelab.tracking.stats.seed_plan import _pairs, comparison_differences, ledger_results
from gatelab.trainer.config.metric_names import FINAL_VAL_LOSS
from gatelab.trainer.config.outcome import Status


def test_only_a_finished_trial_with_a_finite_value_has_a_paired_value():
    assert paired_value(Status.FINISHED, 3.5) == 3.5
    for status, value in ((Status.DIVERGED, 3.5), (Status.FAILED, 3.5), (Status.FINISHED, math.nan)):
        assert paired_value(status, value) is None, (status, value)
    assert seed_values([(0, "finished", 1.0), (1, "diverged", 9.0), (2, "finished", math.inf)]) == {0: 1.0}


def _ledger():
    """Seeds 0-3 of one comparison: seed 1's variant diverged, seed 3's baseline finished without the metric."""
    trial = {(side, s): SimpleNamespace(key=f"{side}{s}", label=f"{side} seed={s}") for side in "vb" for s in range(4)}
    comp = SimpleNamespace(
        variant={s: trial["v", s] for s in range(4)}, baseline={s: trial["b", s] for s in range(4)}, name="v vs b"
    )
    loss = {"v0": 3.0, "b0": 3.5, "v1": 99.0, "b1": 3.6, "v2": 3.1, "b2": 3.4, "v3": 3.2}
    records = {
        key: SimpleNamespace(
            status=Status.DIVERGED if key == "v1" else Status.FINISHED,
            metrics={FINAL_VAL_LOSS: loss[key]} if key in loss else {},
        )
        for key in (t.key for t in trial.values())
    }
    return comp, records


def test_the_report_plan_and_seed_plan_pair_the_same_seeds():
    comp, records = _ledger()
    # gatelab plan
    planned = comparison_differences(comp, records, FINAL_VAL_LOSS)
    assert planned == {0: -0.5, 2: 3.1 - 3.4}
    # the report (rows and forest): outcomes of each side, paired
    outcomes = {
        side: [SimpleNamespace(trial=SimpleNamespace(seed=s), **vars(records[t.key])) for s, t in trials.items()]
        for side, trials in (("v", comp.variant), ("b", comp.baseline))
    }
    reported = paired_differences(
        outcome_seed_values(outcomes["v"], FINAL_VAL_LOSS), outcome_seed_values(outcomes["b"], FINAL_VAL_LOSS)
    )
    assert reported == planned
    # a seeds: grid's plan: the same pair at seed 0, then stopped by seed 1's diverged variant, said so
    pairs, blocked = _pairs(comp, 4, ledger_results(FINAL_VAL_LOSS, records))
    assert pairs == [planned[0]] and blocked == "v1 (v seed=1) diverged"
