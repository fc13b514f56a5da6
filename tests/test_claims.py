"""The paper's orderings (tracking/stats/claims.py) on synthetic results: each can hold, fail, or be unmeasured."""

from __future__ import annotations

import math

from gatelab.tracking.stats.claims import BASELINE, G1, INPUT_INDEPENDENT, NS_SIGMOID, check_orderings
from gatelab.tracking.stats.rows import ReportInput, TrialOutcome, TrialSpec, VariantSpec, build_rows
from gatelab.trainer.config.catalog import get_variant

NAMES = (BASELINE, G1, NS_SIGMOID, INPUT_INDEPENDENT)


def _outcome(variant: str, seed: int, lr: float = 3e-3, status: str = "finished", **metrics) -> TrialOutcome:
    trial = TrialSpec(key=f"{variant}-{seed}-{lr}", variant=variant, seed=seed, lr=lr, condition="")
    ppl = metrics.pop("ppl", 10.0)
    return TrialOutcome(
        trial=trial,
        status=status,
        run_id="r",
        history={},
        metrics={"final_val_ppl": ppl, "final_val_loss": math.log(ppl), "spike_count": 0.0, **metrics},
    )


def _checks(outcomes: list[TrialOutcome]) -> dict:
    variants = {n: VariantSpec(name=n, paper_ref="t", gated=n != BASELINE) for n in NAMES}
    inp = ReportInput(
        grid="g", experiment="g", preset="laptop", trials=tuple(o.trial for o in outcomes), variants=variants
    )
    return {c.label: c for c in check_orderings(build_rows(inp, outcomes), outcomes)}


def _paper_like(seeds=(0, 1, 2)) -> list[TrialOutcome]:
    """Figures shaped like Table 4: a sink in the baseline, none with G1, partial without sparsity."""
    out = []
    for s in seeds:
        out.append(_outcome(BASELINE, s, ppl=6.0 + 0.01 * s, f_attn=0.46))
        out.append(_outcome(G1, s, ppl=5.7 + 0.012 * s, f_attn=0.05, gate_mean=0.12))
        out.append(_outcome(NS_SIGMOID, s, ppl=5.9, f_attn=0.45, gate_mean=0.65))
        out.append(_outcome(INPUT_INDEPENDENT, s, ppl=5.9, f_attn=0.36, gate_mean=0.33))
    return out


def test_paper_like_results_hold_a_to_d_and_e_needs_a_sweep():
    checks = _checks(_paper_like())
    assert [checks[k].verdict for k in "(a) (b) (c) (d)".split()] == ["held"] * 4
    assert "p=" in checks["(a)"].strength and "-0.29" in checks["(a)"].strength
    assert "9.20x" in checks["(b)"].strength
    assert checks["(e)"].verdict == "not measured" and "LR sweep" in checks["(e)"].measured


def test_no_sink_and_a_dense_gate_do_not_hold():
    outcomes = (
        [_outcome(BASELINE, s, ppl=6.0, f_attn=0.03) for s in (0, 1, 2)]
        + [_outcome(G1, s, ppl=6.1 + 0.01 * s, f_attn=0.028, gate_mean=0.4) for s in (0, 1, 2)]
        + [_outcome(NS_SIGMOID, s, f_attn=0.02) for s in (0, 1, 2)]
        + [_outcome(INPUT_INDEPENDENT, s, f_attn=0.04) for s in (0, 1, 2)]
    )
    checks = _checks(outcomes)
    assert checks["(a)"].verdict == "did not hold"
    assert checks["(b)"].verdict == "did not hold" and "1.07x" in checks["(b)"].strength
    assert checks["(c)"].verdict == "partly held"
    assert checks["(d)"].verdict == "did not hold"


def test_f_attn_barely_above_g1_is_a_direction_not_a_held_ordering():
    outcomes = (
        [_outcome(G1, s, f_attn=0.020) for s in (0, 1, 2)]
        + [_outcome(NS_SIGMOID, s, f_attn=0.023) for s in (0, 1, 2)]
        + [_outcome(INPUT_INDEPENDENT, s, f_attn=0.031) for s in (0, 1, 2)]
    )
    assert _checks(outcomes)["(c)"].verdict == "direction only (< 1.5x)"
    clear = outcomes[:6] + [_outcome(INPUT_INDEPENDENT, s, f_attn=0.02) for s in (0, 1, 2)]
    assert _checks(clear)["(c)"].verdict == "partly held"


def test_a_lower_ppl_without_significance_is_said_so():
    outcomes = [_outcome(BASELINE, s, ppl=p) for s, p in enumerate((6.0, 6.2, 6.1))] + [
        _outcome(G1, s, ppl=p) for s, p in enumerate((5.9, 6.25, 6.05))
    ]
    assert _checks(outcomes)["(a)"].verdict == "held (not significant)"


def test_spikes_at_the_top_lrs_count_divergence_first():
    lrs = (1e-3, 1e-2, 1e-1)
    outcomes = (
        [_outcome(BASELINE, 0, lr, spike_count=1.0) for lr in lrs[:2]]
        + [_outcome(BASELINE, 0, lrs[2], status="diverged", ppl=math.nan)]
        + [_outcome(G1, 0, lr, spike_count=3.0) for lr in lrs]
    )
    check = _checks(outcomes)["(e)"]
    # Top two LRs: the baseline spiked once and diverged once; G1 spiked six times but trained through.
    assert check.verdict == "held" and "spikes 1 vs 6, divergences 1 vs 0" == check.strength
    calm = [_outcome(BASELINE, 0, lr) for lr in lrs] + [_outcome(G1, 0, lr, spike_count=1.0) for lr in lrs]
    assert _checks(calm)["(e)"].verdict == "did not hold"


def test_missing_variants_are_not_measured_never_guessed():
    checks = _checks([_outcome(BASELINE, s) for s in (0, 1)])
    assert {c.verdict for c in checks.values()} == {"not measured"}


def test_the_papers_column_is_the_catalogs_figures():
    paper = {check.label: check.paper for check in check_orderings([], [])}
    g1, base = get_variant(G1).paper, get_variant(BASELINE).paper
    assert paper["(a)"].startswith(f"{g1.ppl:.3f} vs {base.ppl:.3f}")
    assert paper["(b)"].startswith(f"{base.f_attn:.3f} vs {g1.f_attn:.3f}, {base.f_attn / g1.f_attn:.1f}x")
    assert paper["(c)"].startswith(
        f"{get_variant(NS_SIGMOID).paper.f_attn:.3f} and "
        f"{get_variant(INPUT_INDEPENDENT).paper.f_attn:.3f} vs {g1.f_attn:.3f}"
    )
    assert paper["(d)"].startswith(f"{g1.gate_mean:.3f}")
