"""The forest plot's numbers (tracking/stats/forest.py) on cases worked by hand: the paired differences, the paired
t-interval with Holm's step-down correction for fixed seeds, a large difference judged 'different', a `seeds:`
grid judged exactly as its driver judges it, the validation-loss gap along training, the families; and the
figures drawn from them."""

from __future__ import annotations

import math
import statistics
from types import SimpleNamespace

import pytest
from scipy import stats

from gatelab.grid.dispatch.adaptive import verdict_rows
from gatelab.grid.spec.expand import expand
from gatelab.grid.spec.grid_file import load_grid
from gatelab.grid.spec.report_input import report_input
from gatelab.tracking.report.comparison_figures import f_attn_heatmap, forest_plot, gap_curves
from gatelab.tracking.stats.forest import family, forest, val_loss_gaps
from gatelab.tracking.stats.rows import ReportInput, TrialOutcome, TrialSpec, VariantSpec, build_rows
from gatelab.trainer.config.catalog import load_catalog

PNG = b"\x89PNG\r\n\x1a\n"
G1 = {"gate_position": "g1", "gate_granularity": "elementwise", "gate_sharing": "head_specific"}
G1 |= {"gate_combine": "multiplicative", "gate_activation": "sigmoid", "gate_input": "hidden"}


def _outcome(variant: str, seed: int, loss: float, curve=()) -> TrialOutcome:
    trial = TrialSpec(key=f"{variant}-{seed}", variant=variant, seed=seed, lr=3e-3)
    return TrialOutcome(
        trial=trial,
        status="finished",
        run_id="r",
        metrics={"final_val_loss": loss, "final_val_ppl": math.exp(loss)},
        history={"val_loss": list(curve), "final_val_loss": [(10, loss)]},
    )


def _input(outcomes, **variants) -> ReportInput:
    specs = {
        name: VariantSpec(name=name, paper_ref="t", gated=name != "baseline", **kw) for name, kw in variants.items()
    }
    return ReportInput(grid="g", experiment="g", preset="tiny", trials=tuple(o.trial for o in outcomes), variants=specs)


def test_fixed_seeds_interval_and_holm_match_a_hand_computation():
    base = [2.0, 2.1, 2.05, 1.98]
    big = [-0.50, -0.52, -0.49, -0.51]  # a large, consistent improvement
    noise = [0.02, -0.03, 0.01, -0.01]
    outcomes = [_outcome("baseline", s, v) for s, v in enumerate(base)]
    outcomes += [_outcome("big", s, base[s] + d) for s, d in enumerate(big)]
    outcomes += [_outcome("noise", s, base[s] + d) for s, d in enumerate(noise)]
    inp = _input(outcomes, baseline={"paper_ppl": 6.026}, big={"paper_ppl": 5.761, "axes": G1}, noise={})
    result = forest(inp, build_rows(inp, outcomes), outcomes)
    rows = {r.label: r for r in result.rows}
    assert set(rows) == {"big", "noise"}
    for name, diffs in (("big", big), ("noise", noise)):
        assert rows[name].per_seed == pytest.approx(dict(enumerate(diffs)))
        assert rows[name].mean == pytest.approx(statistics.fmean(diffs)) and rows[name].n == 4
    p = {n: stats.ttest_1samp(d, 0).pvalue for n, d in (("big", big), ("noise", noise))}
    assert p["big"] * 2 <= 0.05 < p["noise"]  # Holm: the smaller p against alpha/2, the next against alpha/1
    assert rows["big"].verdict == "different" and rows["noise"].verdict == "not significant"
    assert rows["big"].level == pytest.approx(1 - 0.05 / 2) and rows["noise"].level == pytest.approx(1 - 0.05)
    for name, diffs in (("big", big), ("noise", noise)):
        half = stats.t.ppf(1 - (1 - rows[name].level) / 2, 3) * statistics.stdev(diffs) / 2
        assert rows[name].ci == pytest.approx((statistics.fmean(diffs) - half, statistics.fmean(diffs) + half))
    assert rows["big"].ci[1] < 0 < rows["noise"].ci[1] and rows["noise"].ci[0] < 0
    assert rows["big"].paper == pytest.approx(math.log(5.761 / 6.026)) and rows["noise"].paper is None
    assert (rows["big"].family, rows["noise"].family) == ("position", "other")
    assert [r.label for r in result.rows] == ["big", "noise"]  # family order: position first, 'other' last


def test_one_seed_is_not_tested_and_has_no_interval():
    outcomes = [_outcome("baseline", 0, 2.0), _outcome("one", 0, 1.0)]
    inp = _input(outcomes, baseline={}, one={})
    (row,) = forest(inp, build_rows(inp, outcomes), outcomes).rows
    assert (row.n, row.verdict, row.ci, row.mean) == (1, "not tested", None, pytest.approx(-1.0))


def test_a_seeds_grid_gets_exactly_the_drivers_verdicts_and_intervals():
    spec = load_grid("adaptive_seeds")
    trials = expand(spec)
    inp = report_input(spec, trials, 0.05)
    # baseline 2.0 + noise; elementwise far below on every seed; headwise noise; input_independent blocked at seed 1
    value = {"baseline": 2.0, "g1_elementwise_sigmoid": 1.5, "g1_headwise_sigmoid": 2.0, "g1_input_independent": 2.0}
    outcomes, records = [], {}
    for trial in trials:
        seed, variant = trial.config.seed, trial.config.variant
        loss = value[variant] + 0.01 * ((seed * 7 + len(variant)) % 5)
        status = "failed" if (variant, seed) == ("g1_input_independent", 1) else "finished"
        spec_of = next(t for t in inp.trials if t.key == trial.key)
        outcome = TrialOutcome(trial=spec_of, status=status, run_id="r", metrics={"final_val_loss": loss}, history={})
        outcomes.append(outcome)
        records[trial.key] = SimpleNamespace(status=status, metrics=outcome.metrics)
    result = forest(inp, build_rows(inp, outcomes), outcomes)
    drivers = {v["comparison"]: v for v in verdict_rows(spec.seeds, trials, records)}
    assert {r.label for r in result.rows} == set(drivers)
    for row in result.rows:
        driver = drivers[row.label]
        assert (row.verdict, row.n) == (driver["verdict"], driver["seeds"]), row.label
        assert row.mean == pytest.approx(driver["mean_difference"])
        assert (row.ci is None and driver["ci"] is None) or row.ci == pytest.approx(driver["ci"])
    verdicts = {r.label: r.verdict for r in result.rows}
    assert verdicts["g1_elementwise_sigmoid"] == "different" and verdicts["g1_input_independent"] == "blocked"
    assert result.margin == spec.seeds.margin and result.metric == spec.seeds.metric


def test_val_loss_gap_pairs_seeds_at_each_step():
    curve = lambda offset: [(5, 3.0 + offset), (8, 2.6 + offset)]  # noqa: E731
    outcomes = [_outcome("baseline", s, 2.0 + 0.1 * s, curve(0.1 * s)) for s in range(3)]
    gaps = [-0.1, -0.3, -0.2]
    outcomes += [_outcome("g", s, 2.0 + 0.1 * s + d, curve(0.1 * s + d / 2)) for s, d in enumerate(gaps)]
    inp = _input(outcomes, baseline={}, g={"axes": G1 | {"gate_granularity": "headwise"}})
    (gap,) = val_loss_gaps(inp, build_rows(inp, outcomes))
    assert gap.steps == (5, 8, 10) and gap.n == (3, 3, 3) and gap.family == "granularity"
    assert gap.mean == pytest.approx((-0.1, -0.1, -0.2))  # half the final gap along training, then the final one
    se = statistics.stdev(gaps) / math.sqrt(3)
    assert gap.se == pytest.approx((se / 2, se / 2, se))


def test_families_of_the_catalog():
    catalog = load_catalog()
    expected = {
        "g1_elementwise_sigmoid": "position",
        "g3_elementwise_sigmoid": "position",
        "g1_g2_elementwise_sigmoid": "position",
        "g1_headwise_sigmoid": "granularity",
        "g1_shared_sigmoid": "granularity",
        "g1_elementwise_silu": "activation",
        "g1_additive_silu": "activation",
        "g1_input_independent": "activation",
        "g1_headwise_ns_sigmoid": "activation",
        "more_kv_heads": "controls",
        "g1_rmsnorm": "controls",
        "g1_sdpa_silu": "controls",
    }
    assert {name: family(catalog[name].axes) for name in expected} == expected


def test_figures_are_drawn_from_the_numbers(tmp_path):
    base = [2.0, 2.1, 2.05]
    outcomes = [_outcome("baseline", s, v, [(5, v + 1)]) for s, v in enumerate(base)]
    outcomes += [_outcome("g", s, v - 0.5, [(5, v + 0.6)]) for s, v in enumerate(base)]
    inp = _input(outcomes, baseline={"paper_ppl": 6.0}, g={"paper_ppl": 5.7, "axes": G1})
    rows = build_rows(inp, outcomes)
    assert forest_plot(forest(inp, rows, outcomes), "baseline", tmp_path / "f.png").read_bytes()[:8] == PNG
    assert gap_curves(val_loss_gaps(inp, rows), "baseline", tmp_path / "g.png").read_bytes()[:8] == PNG
    assert f_attn_heatmap({"baseline": [0.3, 0.5], "g": [0.05]}, tmp_path / "h.png").read_bytes()[:8] == PNG
    assert forest_plot(forest(inp, rows[:1], outcomes[:3]), "baseline", tmp_path / "none.png") is None
