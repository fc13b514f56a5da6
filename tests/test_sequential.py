"""The adaptive-seed verdicts (tracking/stats/sequential.py): by simulation, repeated looks and many variants do not
inflate the rate of false "different" verdicts, and a true difference of a few noise-sigmas is found."""

import math
import random

import pytest

from gatelab.tracking.stats.sequential import (
    SeedRule,
    Verdict,
    holm,
    judge,
    look_corrected,
    seeds_to_resolve,
    t_p_values,
)

RULE = SeedRule(min=2, max=8, margin=0.5, alpha=0.05)  # margin in units of the noise sigma


def run_adaptive(effects: list[float], rule: SeedRule, rng: random.Random) -> dict[str, tuple[Verdict, int]]:
    """One adaptive grid: every variant starts with `min` paired seeds; open ones get one more per wave."""
    draws = {f"v{i}": [rng.gauss(effect, 1.0) for _ in range(rule.max)] for i, effect in enumerate(effects)}
    seeds = dict.fromkeys(draws, rule.min)
    while True:
        verdicts = judge({name: d[: seeds[name]] for name, d in draws.items()}, rule)
        open_ones = [name for name, j in verdicts.items() if j.verdict == Verdict.OPEN]
        if not open_ones:
            return {name: (j.verdict, seeds[name]) for name, j in verdicts.items()}
        for name in open_ones:
            seeds[name] += 1


def test_with_no_true_difference_false_different_verdicts_stay_at_or_below_alpha():
    rng = random.Random(0)
    grids = 300
    false_alarm = sum(
        any(v == Verdict.DIFFERENT for v, _ in run_adaptive([0.0] * 6, RULE, rng).values()) for _ in range(grids)
    )
    assert false_alarm / grids <= RULE.alpha, false_alarm


def test_looking_after_every_wave_without_the_correction_would_inflate_it():
    # The check above can fail: the same looks with plain per-look t-tests (no spending, no Holm) go over alpha.
    rng = random.Random(1)
    naive = SeedRule(min=2, max=8, margin=0.5, alpha=0.05)
    hits = 0
    for _ in range(300):
        draws = [[rng.gauss(0, 1) for _ in range(naive.max)] for _ in range(6)]
        hits += any(
            t_p_values(d[:n], naive.margin)[0] <= naive.alpha for d in draws for n in range(naive.min, naive.max + 1)
        )
    assert hits / 300 > 2 * naive.alpha


def test_a_difference_of_a_few_noise_sigmas_is_found_and_the_nulls_are_not():
    rng = random.Random(2)
    found = 0
    for _ in range(100):
        verdicts = run_adaptive([3.0, 0.0, 0.0, 0.0], RULE, rng)
        found += verdicts["v0"][0] == Verdict.DIFFERENT
    assert found >= 90


def test_clear_comparisons_stop_early_and_close_ones_use_more_seeds():
    rng = random.Random(3)
    spent = {"clear": [], "close": []}
    for _ in range(50):
        verdicts = run_adaptive([6.0, 0.8], RULE, rng)
        spent["clear"].append(verdicts["v0"][1])
        spent["close"].append(verdicts["v1"][1])
    assert sum(spent["clear"]) / 50 < sum(spent["close"]) / 50


def test_equivalence_inside_the_margin():
    rule = SeedRule(min=2, max=8, margin=0.01, alpha=0.05)
    tight = [0.0001 * (i % 3 - 1) for i in range(8)]  # differences far inside +-0.01
    assert judge({"v": tight}, rule)["v"].verdict == Verdict.EQUIVALENT


def test_a_comparison_below_min_seeds_is_open_and_at_max_undecided():
    rule = SeedRule(min=3, max=4, margin=0.001, alpha=0.05)
    assert judge({"v": [0.1, -0.2]}, rule)["v"].verdict == Verdict.OPEN
    assert judge({"v": [0.1, -0.2, 0.3, -0.1]}, rule)["v"].verdict == Verdict.UNDECIDED


def test_holm_is_step_down_and_monotone():
    assert holm({"a": 0.01, "b": 0.04, "c": 0.03}) == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06})


def test_look_correction_takes_the_best_look_times_the_planned_looks():
    d = [1.0, 1.1, 0.9, 1.2]
    rule = SeedRule(min=2, max=5, margin=0.1, alpha=0.05)
    best = min(t_p_values(d[:n], 0.1)[0] for n in (2, 3, 4))
    assert look_corrected(d, rule)[0] == pytest.approx(min(1.0, 4 * best))


def test_seeds_to_resolve_grows_with_noise_and_shrinks_with_effect():
    assert seeds_to_resolve(1.0, 1.0, 0.8, 0.05) < seeds_to_resolve(2.0, 1.0, 0.8, 0.05)
    assert seeds_to_resolve(1.0, 2.0, 0.8, 0.05) < seeds_to_resolve(1.0, 1.0, 0.8, 0.05)
    # the textbook figure: d = 1 at 80% power, two-sided 5%, paired t: 10 pairs
    assert seeds_to_resolve(1.0, 1.0, 0.8, 0.05) == 10
    assert seeds_to_resolve(0.0, 1.0, 0.8, 0.05) is None and not math.isnan(RULE.margin)
