"""`gatelab report`: the max-stable-LR rule and the paired test on known cases, and the report of a small grid
built in a real MLflow store (one trial really trained, the rest logged the way trainer/run.py logs them)."""

from __future__ import annotations

import csv
import json
import math
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from gatelab.grid.cli.main import main
from gatelab.grid.dispatch.ray_jobs import experiment_name
from gatelab.grid.spec.expand import expand
from gatelab.grid.spec.grid_file import load_grid
from gatelab.grid.spec.report_input import report_input
from gatelab.grid.spec.seed_policy import comparisons
from gatelab.tracking import MlflowTracker, Store, ensure_server, stop_server
from gatelab.tracking.report.choice_figure import CategoryStats, by_category, categories, choice_strip
from gatelab.tracking.runs.ledger import TrialRun, ensure_parent_run, open_trial_run
from gatelab.tracking.stats.rows import (
    ReportInput,
    TrialOutcome,
    TrialSpec,
    VariantSpec,
    build_rows,
    max_stable_lr,
    paired_comparison,
)
from gatelab.trainer.config.run_tags import GRID_TAG
from gatelab.trainer.config.trial_folder import PROBES

pytestmark = [pytest.mark.mlflow]

ROOT = Path(__file__).resolve().parents[1]

# --- max stable LR -----------------------------------------------------------------------------------------


def test_all_diverged_has_no_stable_lr():
    assert max_stable_lr([(1e-3, "diverged", math.nan), (2e-3, "diverged", 9.0)]) is None
    assert max_stable_lr([]) is None
    assert max_stable_lr([(1e-3, "running", 2.0), (2e-3, "failed", 2.0)]) is None  # not results


def test_best_loss_lr_is_stable_and_larger_worse_ones_are_not():
    results = [(1e-3, "finished", 3.0), (2e-3, "finished", 2.8), (4e-3, "finished", 3.5), (8e-3, "finished", 4.0)]
    assert max_stable_lr(results) == 2e-3
    assert max_stable_lr(results, margin=0.3) == 4e-3  # 3.5 <= 2.8 * 1.3


def test_a_diverged_lr_between_stable_ones_does_not_cap_the_largest():
    results = [
        (1e-3, "finished", 2.9),
        (2e-3, "diverged", math.nan),
        (4e-3, "finished", 2.85),
        (8e-3, "diverged", 1.0),
    ]  # a diverged run's loss never counts as the best
    assert max_stable_lr(results) == 4e-3


def test_margin_boundary_is_inclusive():
    best, margin = 2.0, 0.05
    at = best * (1 + margin)
    assert max_stable_lr([(1e-3, "finished", best), (2e-3, "finished", at)], margin) == 2e-3
    above = math.nextafter(at, math.inf)
    assert max_stable_lr([(1e-3, "finished", best), (2e-3, "finished", above)], margin) == 1e-3


def test_every_seed_of_an_lr_must_be_stable():
    results = [
        (1e-3, "finished", 2.0),
        (2e-3, "finished", 2.0),
        (2e-3, "diverged", math.nan),
        (4e-3, "finished", 2.01),
        (4e-3, "finished", math.inf),
    ]
    assert max_stable_lr(results) == 1e-3


# --- paired comparison -------------------------------------------------------------------------------------


def test_paired_t_test_matches_a_hand_computed_case():
    variant = {0: 10.0, 1: 11.0, 2: 12.5, 7: 3.0}  # seed 7 has no baseline partner: left out
    baseline = {0: 10.5, 1: 11.8, 2: 12.9, 5: 1.0}
    diffs = [-0.5, -0.8, -0.4]
    mean = sum(diffs) / 3
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2)
    t = mean / (sd / math.sqrt(3))
    p = 1 - abs(t) / math.sqrt(t * t + 2)  # two-sided p of Student's t with 2 degrees of freedom, closed form
    result = paired_comparison(variant, baseline)
    assert result.test == "paired t-test" and result.n_pairs == 3
    assert result.mean_diff == pytest.approx(mean)
    assert result.statistic == pytest.approx(t)
    assert result.p_value == pytest.approx(p)
    assert result.verdict == ("better" if p < 0.05 else "n.s.")
    assert f"p={p:.3g}" in result.describe()


def test_single_pair_and_disjoint_seeds_are_not_tested():
    one = paired_comparison({0: 5.0, 1: 6.0}, {0: 5.5})
    assert (one.n_pairs, one.test, one.p_value, one.verdict) == (1, "n=1, no test", None, "not tested")
    assert one.mean_diff == pytest.approx(-0.5)
    none = paired_comparison({0: 5.0}, {1: 5.5})
    assert none.n_pairs == 0 and "no seeds in common" in none.test and none.verdict == "not tested"


def test_clear_improvement_over_several_seeds_is_better():
    baseline = {s: 10.0 + 0.1 * s for s in range(5)}
    variant = {s: v - 1.0 - 0.01 * s for s, v in baseline.items()}
    result = paired_comparison(variant, baseline)
    assert result.p_value < 1e-4 and result.verdict == "better"
    assert paired_comparison(baseline, variant).verdict == "worse"


# --- rows ----------------------------------------------------------------------------------------------------


def _outcome(variant: str, seed: int, ppl: float, condition: str = "", status: str = "finished") -> TrialOutcome:
    trial = TrialSpec(key=f"{variant}-{seed}-{condition}", variant=variant, seed=seed, lr=3e-3, condition=condition)
    return TrialOutcome(
        trial=trial,
        status=status,
        run_id="r",
        history={},
        metrics={"final_val_ppl": ppl, "final_val_loss": math.log(ppl), "spike_count": 0.0},
    )


def _variants(*names: str) -> dict:
    return {n: VariantSpec(name=n, paper_ref="t", gated=n != "baseline") for n in names}


def test_rows_pair_within_a_condition_and_say_when_there_is_no_baseline():
    outcomes = (
        [_outcome("baseline", s, 10.0 + s, "L=2") for s in (0, 1, 2)]
        + [_outcome("baseline", s, 20.0 + s, "L=4") for s in (0, 1, 2)]
        + [_outcome("g1", s, 9.0 + s + 0.01 * s * s, "L=2") for s in (0, 1, 2)]
        + [_outcome("g1", s, 19.0 + s, "L=4", "diverged" if s == 2 else "finished") for s in (0, 1, 2)]
    )
    inp = ReportInput(
        grid="g",
        experiment="g",
        preset="tiny",
        trials=tuple(o.trial for o in outcomes),
        variants=_variants("baseline", "g1"),
    )
    rows = {(r.variant.name, r.condition): r for r in build_rows(inp, outcomes)}
    assert list(rows) == [("baseline", "L=2"), ("baseline", "L=4"), ("g1", "L=2"), ("g1", "L=4")]
    short = rows[("g1", "L=2")].comparison
    assert short.n_pairs == 3 and short.mean_diff == pytest.approx(-1 + 0.05 / 3)  # against L=2 baseline only
    long = rows[("g1", "L=4")]
    assert long.n_diverged == 1 and long.ppl.n == 2 and long.comparison.n_pairs == 2
    assert long.comparison.mean_diff == pytest.approx(-1.0) and long.comparison.p_value is None  # no variance
    alone = ReportInput(grid="g", experiment="g", preset="tiny", trials=(), variants=_variants("g1"))
    (row,) = build_rows(alone, [_outcome("g1", 0, 9.0)])
    assert row.comparison.test == "no baseline in the grid" and row.comparison.verdict == "not tested"


def _spec(tmp_path, **grid):
    base = {"model": {"preset": "tiny"}, "optim": {"warmup_steps": 1}, "schedule": {"max_steps": 4, "batch_size": 2}}
    path = tmp_path / "conditions.yaml"
    path.write_text(yaml.safe_dump({"name": "conditions", "base": base, **grid}, sort_keys=False))
    return load_grid(path)


def _conditions(tmp_path, **grid) -> dict[str, str]:
    """Each trial's report condition, by label, of a tiny grid written with these keys."""
    spec = _spec(tmp_path, **grid)
    return {t.label: t.condition for t in report_input(spec, expand(spec), 0.05).trials}


INCLUDED = {
    "axes": {"variant": ["baseline", "g1_elementwise_sigmoid"], "model.overrides.n_layers": [2, 3], "seed": [0, 1]},
    "include": [
        {"variant": "g1_headwise_sigmoid", "seed": 0},
        {"variant": "g1_headwise_sigmoid", "optim.warmup_steps": 5},
    ],
}


def test_an_include_at_the_base_value_of_an_axis_lands_in_that_values_condition(tmp_path):
    # The include leaves n_layers at the tiny preset's 2: it is compared with the baseline at n_layers=2, not
    # put in a condition '' of its own with no baseline to pair with.
    conditions = {label: c for label, c in _conditions(tmp_path, **INCLUDED).items() if "seed=1" not in label}
    assert conditions == {
        "baseline n_layers=2 seed=0": "n_layers=2 warmup_steps=1",
        "baseline n_layers=3 seed=0": "n_layers=3 warmup_steps=1",
        "g1_elementwise_sigmoid n_layers=2 seed=0": "n_layers=2 warmup_steps=1",
        "g1_elementwise_sigmoid n_layers=3 seed=0": "n_layers=3 warmup_steps=1",
        "g1_headwise_sigmoid seed=0": "n_layers=2 warmup_steps=1",
        "g1_headwise_sigmoid warmup_steps=5": "n_layers=2 warmup_steps=5",
    }


def test_each_rows_added_parameters_are_counted_at_its_own_depth(tmp_path):
    # A gate adds parameters per layer: the n_layers=3 rows add 1.5x what the n_layers=2 rows add (a count at
    # the base preset once showed the 2-layer figure on every row).
    spec = _spec(tmp_path, **INCLUDED)
    inp = report_input(spec, expand(spec), 0.05)
    outcomes = [TrialOutcome(trial=t, status="finished", run_id="r", history={}, metrics={}) for t in inp.trials]
    added = {(r.variant.name, r.condition): r.extra_params for r in build_rows(inp, outcomes)}
    gated_2, gated_3 = (added["g1_elementwise_sigmoid", f"n_layers={n} warmup_steps=1"] for n in (2, 3))
    assert gated_2 > 0 and gated_3 == gated_2 * 3 // 2
    assert added["baseline", "n_layers=3 warmup_steps=1"] == 0


def test_the_seed_comparisons_see_the_same_conditions_as_the_report(tmp_path):
    # what `gatelab plan` and a `seeds:` grid's driver pair: the include at the base's n_layers has its baseline
    comps = {c.name: c for c in comparisons(expand(_spec(tmp_path, **INCLUDED)))}
    headwise = comps["g1_headwise_sigmoid [model.overrides.n_layers=2 optim.warmup_steps=1]"]
    assert sorted(headwise.variant) == [0] and sorted(headwise.baseline) == [0, 1]
    assert comps["g1_headwise_sigmoid [model.overrides.n_layers=2 optim.warmup_steps=5]"].baseline == {}
    # a baseline zipped with an extra layer is paired with the variant it is matched to
    spec = _spec(
        tmp_path,
        combine="zip",
        axes={"variant": ["baseline", "g1_elementwise_sigmoid"], "model.overrides.n_layers": [3, 2]},
    )
    [matched] = comparisons(expand(spec), spec)
    assert matched.name == "g1_elementwise_sigmoid" and list(matched.baseline) == [0]


def test_zipped_axes_tied_to_the_lr_are_not_conditions_but_untied_ones_are(tmp_path):
    # warmup zipped with the LR: one LR sweep per variant (the max stable LR needs every LR in one row)
    tied = _conditions(tmp_path, combine="zip", axes={"optim.lr": [1.0e-3, 3.0e-3], "optim.warmup_steps": [1, 2]})
    assert set(tied.values()) == {""}
    # nothing of variant, seed or LR zipped: each zip point is its own condition
    untied = _conditions(
        tmp_path, combine="zip", axes={"model.overrides.n_layers": [1, 2], "optim.warmup_steps": [1, 2]}
    )
    assert sorted(untied.values()) == ["n_layers=1 warmup_steps=1", "n_layers=2 warmup_steps=2"]


def test_choice_values_are_summarised_and_drawn_in_the_grids_order(tmp_path):
    points = {
        "study a": [("silu", "finished", 2.0, 1.0), ("sigmoid", "finished", 1.0, 0.0), ("silu", "finished", 3.0, 0.0)],
        "study b": [("sigmoid", "diverged", math.nan, 2.0), ("old", "finished", 4.0, 0.0)],
    }
    labels = categories(["sigmoid", "silu", "identity"], points)
    assert labels == ["sigmoid", "silu", "identity", "old"]  # untried 'identity' kept; a stray value appended
    a = by_category(points["study a"], labels)
    assert list(a) == ["sigmoid", "silu"]
    assert a["silu"] == CategoryStats(runs=2, loss=2.5, spikes=0.5, diverged=0)
    b = by_category(points["study b"], labels)
    assert b["sigmoid"] == CategoryStats(runs=1, loss=None, spikes=2.0, diverged=1)
    path = choice_strip(points, ["sigmoid", "silu", "identity"], tmp_path / "choice.png", key="gate")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert choice_strip({"study a": []}, ["x"], tmp_path / "none.png", key="gate") is None


def test_report_code_does_not_load_torch():
    code = (
        "import sys, gatelab.tracking.report.grid_report, gatelab.grid.cli.report_command; "
        "assert 'torch' not in sys.modules, 'torch loaded'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# --- the report of a small grid in a real MLflow store -------------------------------------------------------

VARIANTS = ["baseline", "g1_elementwise_sigmoid", "g1_headwise_sigmoid"]
LRS = [3.0e-3, 1.0e-2]
# final val loss per (variant, lr, seed); 'diverged' / 'running' / 'new' / 'real' (trained here) otherwise
PLAN = {
    ("baseline", 3.0e-3, 0): 2.00,
    ("baseline", 3.0e-3, 1): 2.10,
    ("baseline", 1.0e-2, 0): 2.30,
    ("baseline", 1.0e-2, 1): "diverged",
    ("g1_elementwise_sigmoid", 3.0e-3, 0): 1.90,
    ("g1_elementwise_sigmoid", 3.0e-3, 1): 1.95,
    ("g1_elementwise_sigmoid", 1.0e-2, 0): 1.92,
    ("g1_elementwise_sigmoid", 1.0e-2, 1): 1.96,
    ("g1_headwise_sigmoid", 3.0e-3, 0): "real",
    ("g1_headwise_sigmoid", 3.0e-3, 1): "running",
    ("g1_headwise_sigmoid", 1.0e-2, 0): "new",
    ("g1_headwise_sigmoid", 1.0e-2, 1): "diverged",
}
GATE_HIST = [50, 30, 10, 5, 5] + [0] * 15 + [0, 0]
FIGURES = [
    "forest.png",
    "val_loss_gap.png",
    "f_attn_heatmap.png",
    "gate_histograms.png",
    "loss_curves.png",
    "lr_sweep.png",
    "long_context.png",
]


def _log_like_the_trainer(uri, experiment, parent, trial, outcome) -> None:
    """The tags, params, metrics and artifacts trainer/run.py writes, with chosen final losses."""
    config = trial.config
    tracker = MlflowTracker.create(
        uri,
        experiment,
        run_name=trial.label,
        parent_run_id=parent,
        asynchronous=False,
        tags={
            "gatelab.kind": "trial",
            "trial_key": trial.key,
            "gatelab.grid": "rep",
            "variant": config.variant,
            "seed": str(config.seed),
            "lr": f"{config.optim.lr:g}",
        },
    )
    tracker.log_params(
        {
            "variant": config.variant,
            "seed": config.seed,
            "optim.lr": config.optim.lr,
            "model.preset": config.model.preset,
        }
    )
    if outcome == "running":
        tracker.log_metrics({"train_loss": 5.0, "step": 1.0}, 1)
        tracker.flush()
        return
    loss = 3.0 if outcome == "diverged" else outcome
    for step in range(1, 11):
        tracker.log_metrics({"train_loss": loss + 1.0 / step}, step)
    spikes = 1 if config.variant == "baseline" and config.seed == 0 else 0
    if spikes:
        tracker.log_metrics({"spike_ratio": 1.8}, 4)
    tracker.log_metrics({"val_loss": loss + 0.2}, 5)
    if outcome == "diverged":
        tracker.log_metrics(
            {"spike_count": 0.0, "final_val_loss": math.nan, "final_val_ppl": math.nan, "diverged_at_step": 8.0}, 8
        )
        tracker.set_status("diverged")
        return
    gated = config.variant != "baseline"
    summary = {
        "val_loss": loss,
        "final_val_loss": loss,
        "final_val_ppl": math.exp(loss),
        "spike_count": float(spikes),
        "max_spike_ratio": 1.8 * spikes,
        "f_attn": 0.05 if gated else 0.4,
        "f_attn_layer_0": 0.06 if gated else 0.3,
        "f_attn_layer_1": 0.04 if gated else 0.5,
        "m_act": 20.0 if gated else 60.0,
        "sink_eps": 0.1,
        **{
            f"long_ppl_x{f}_{r}": math.exp(loss) * (1 + 0.1 * f * (r == "rope"))
            for f in (1, 2, 4)
            for r in ("rope", "yarn")
        },
    }
    if gated:
        summary["gate_mean"] = 0.2
    tracker.log_metrics(summary, 10)
    probes = {"gate_hist_counts": GATE_HIST if gated else [], "f_attn_per_layer": [0.06, 0.04]}
    tracker.log_text(json.dumps(probes), PROBES)
    tracker.set_status("finished")


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """A finished-as-far-as-it-goes grid: 12 trials, one trained for real, one running, one never started."""
    root = tmp_path_factory.mktemp("report")
    grid_file = root / "rep.yaml"
    grid_file.write_text(
        yaml.safe_dump(
            {
                "name": "rep",
                "base": {
                    "model": {"preset": "tiny"},
                    "optim": {"warmup_steps": 2},
                    "schedule": {"max_steps": 10, "batch_size": 4, "log_every": 1},
                    "eval": {"every": 5, "batches": 1, "long_context_factors": [1, 2, 4]},
                    "checkpoint": {"every": 10, "keep_last": 1},
                },
                "axes": {"variant": VARIANTS, "optim.lr": LRS, "seed": [0, 1]},
            },
            sort_keys=False,
        )
    )
    spec = load_grid(grid_file)
    trials = expand(spec)
    store = Store(root / "home").ensure()
    info, _ = ensure_server(store)
    try:
        experiment = experiment_name(spec)
        parent = ensure_parent_run(info.uri, experiment, spec.name, {}, store.locks_dir)
        for trial in trials:
            outcome = PLAN[(trial.config.variant, trial.config.optim.lr, trial.config.seed)]
            if outcome == "real":
                from gatelab.trainer.run import run_trial

                run = TrialRun(
                    uri=info.uri,
                    experiment=experiment,
                    key=trial.key,
                    run_name=trial.label,
                    parent_run_id=parent,
                    tags={GRID_TAG: spec.name},
                )
                tracker, _ = open_trial_run(run)
                run_trial(trial.config, tracker, store.checkpoints_dir / trial.key, store.cache_dir)
                tracker.close()
            elif outcome != "new":
                _log_like_the_trainer(info.uri, experiment, parent, trial, outcome)
        out = root / "out"
        assert main(["report", str(grid_file), "--home", str(store.home), "--out", str(out)]) == 0
        yield {
            "spec": spec,
            "trials": trials,
            "store": store,
            "uri": info.uri,
            "parent": parent,
            "out": out,
            "file": grid_file,
        }
    finally:
        stop_server(store)


def _table(md: str, heading: str) -> list[dict]:
    section = md.split(f"## {heading}")[1].split("\n## ")[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [h.strip() for h in lines[0].strip("|").split(" | ")]
    return [dict(zip(header, (c.strip() for c in line.strip("|").split(" | ")))) for line in lines[2:]]


def test_report_table_has_every_variant_with_paper_figures_beside_ours(grid):
    md = (grid["out"] / "report.md").read_text()
    rows = {row["Variant"]: row for row in _table(md, "Results")}
    assert list(rows) == VARIANTS
    assert rows["baseline"]["PPL (paper, 15A2B MoE)"] == "6.026"
    assert rows["g1_elementwise_sigmoid"]["PPL (paper, 15A2B MoE)"] == "5.761"
    assert rows["g1_elementwise_sigmoid"]["F-Attn (paper, 15A2B MoE, Table 4)"] == "0.048"
    assert rows["g1_headwise_sigmoid"]["Gate mean (paper, 15A2B MoE, Table 4)"] == "0.172"
    assert rows["baseline"]["+Params (ours, tiny)"] == "0"
    assert rows["g1_elementwise_sigmoid"]["+Params (ours, tiny)"] == f"{2 * 32 * 4 * 8:,}"  # layers*D*q*d_k
    assert rows["g1_elementwise_sigmoid"]["+Params (paper, 15A2B MoE)"] == "201M"
    # figures at each variant's best LR: 3e-3 (the headwise 1e-2 seed diverged, so 3e-3 is preferred)
    assert {row["LR (ours, best)"] for row in rows.values()} == {"0.003"}
    ppl = [math.exp(2.0), math.exp(2.1)]
    assert rows["baseline"]["PPL (ours)"] == f"{statistics.fmean(ppl):.3f} ± {statistics.stdev(ppl):.3f}"
    assert rows["baseline"]["Spikes (ours, mean)"] == "0.5"
    assert rows["baseline"]["F-Attn (ours)"] == "0.400"


def test_report_pairs_seeds_and_prints_the_test(grid):
    rows = {row["Variant"]: row for row in _table((grid["out"] / "report.md").read_text(), "Results")}
    diffs = [math.exp(1.90) - math.exp(2.00), math.exp(1.95) - math.exp(2.10)]
    t = statistics.fmean(diffs) / (statistics.stdev(diffs) / math.sqrt(2))
    p = 1 - 2 / math.pi * math.atan(abs(t))  # two-sided p of Student's t with 1 degree of freedom
    gated = rows["g1_elementwise_sigmoid"]
    assert gated["ΔPPL vs baseline (ours, paired by seed)"] == f"{statistics.fmean(diffs):+.3f}"
    assert gated["Test (ours)"] == f"paired t-test, n=2: t={t:.3g}, p={p:.3g}"
    assert gated["Verdict (ours, p<0.05)"] == "n.s."  # 2 seeds, p ~ 0.15: not 'better'
    assert rows["g1_headwise_sigmoid"]["Test (ours)"] == "n=1, no test"
    assert rows["g1_headwise_sigmoid"]["Verdict (ours, p<0.05)"] == "not tested"
    assert rows["baseline"]["ΔPPL vs baseline (ours, paired by seed)"] == "(baseline)"


def test_real_trained_trial_fills_every_measured_column(grid):
    rows = {row["Variant"]: row for row in _table((grid["out"] / "report.md").read_text(), "Results")}
    headwise = rows["g1_headwise_sigmoid"]
    assert headwise["Seeds (ours)"] == "1"
    for column in (
        "PPL (ours)",
        "F-Attn (ours)",
        "M-Act (ours)",
        "Gate mean (ours)",
        "PPL x4/x1 RoPE (ours)",
        "PPL x4/x1 YaRN (ours)",
    ):
        assert re.fullmatch(r"[0-9.]+( \(n=1\))?", headwise[column]), (column, headwise[column])


def test_unfinished_trials_are_listed_not_dropped(grid):
    md = (grid["out"] / "report.md").read_text()
    listed = {row["Key"]: row for row in _table(md, "Unfinished trials")}
    expected = {t.key: PLAN[(t.config.variant, t.config.optim.lr, t.config.seed)] for t in grid["trials"]}
    assert {k: row["Status"] for k, row in listed.items()} == {
        k: v for k, v in expected.items() if v in ("running", "new")
    }
    assert all(row["Variant"] == "g1_headwise_sigmoid" for row in listed.values())


def test_lr_stability_section_and_parent_run_metrics(grid):
    md = (grid["out"] / "report.md").read_text()
    sweep = {row["Variant"]: row for row in _table(md, "Learning-rate stability")}
    assert sweep["baseline"]["LR 0.01"] == "diverged" and sweep["baseline"]["Max stable LR (ours)"] == "0.003"
    assert sweep["g1_elementwise_sigmoid"]["LR 0.01"] == f"{(1.92 + 1.96) / 2:.3f} / 0.0"
    metrics = MlflowClient(tracking_uri=grid["uri"]).get_run(grid["parent"]).data.metrics
    assert metrics["max_stable_lr.baseline"] == pytest.approx(3e-3)
    assert metrics["max_stable_lr.g1_elementwise_sigmoid"] == pytest.approx(1e-2)
    assert metrics["max_stable_lr.g1_headwise_sigmoid"] == pytest.approx(3e-3)


def test_figures_are_written_linked_and_logged_on_the_parent_run(grid):
    md = (grid["out"] / "report.md").read_text()
    for name in FIGURES:
        assert (grid["out"] / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"]({name})" in md
    assert md.index("](forest.png)") < md.index("](loss_curves.png)")  # the answer first
    logged = {a.path for a in MlflowClient(tracking_uri=grid["uri"]).list_artifacts(grid["parent"], "report")}
    assert {f"report/{n}" for n in ["report.md", "forest.json", *FIGURES]} <= logged


def test_forest_numbers_are_the_paired_differences_of_the_runs(grid):
    forest = json.loads((grid["out"] / "forest.json").read_text())
    assert forest["metric"] == "final_val_loss" and "Holm over the 1 tested" in forest["method"]
    rows = {row["label"]: row for row in forest["rows"]}
    assert list(rows) == ["g1_elementwise_sigmoid", "g1_headwise_sigmoid"]  # the baseline is not a row
    # at the best LR (3e-3): seed i of the variant minus seed i of the baseline, by hand from PLAN
    gated = rows["g1_elementwise_sigmoid"]
    diffs = [1.90 - 2.00, 1.95 - 2.10]
    assert gated["per_seed"] == pytest.approx({"0": diffs[0], "1": diffs[1]})
    assert gated["mean"] == pytest.approx(statistics.fmean(diffs)) and gated["n"] == 2
    half = math.tan(math.pi * 0.475) * statistics.stdev(diffs) / math.sqrt(2)  # t quantile, 1 df: tan(pi (q - 1/2))
    assert gated["ci"] == pytest.approx([statistics.fmean(diffs) - half, statistics.fmean(diffs) + half])
    assert (gated["level"], gated["verdict"], gated["family"]) == (pytest.approx(0.95), "not significant", "position")
    assert gated["paper"] == pytest.approx(math.log(5.761 / 6.026))  # Table 1 rows 5 and 1
    # the trial trained here: its logged final loss minus the baseline's seed 0; one pair, no test
    client = MlflowClient(tracking_uri=grid["uri"])
    real = next(t for t in grid["trials"] if PLAN[(t.config.variant, t.config.optim.lr, t.config.seed)] == "real")
    (run,) = client.search_runs(
        [client.get_experiment_by_name("rep").experiment_id], filter_string=f"tags.trial_key = '{real.key}'"
    )
    headwise = rows["g1_headwise_sigmoid"]
    assert headwise["per_seed"] == pytest.approx({"0": run.data.metrics["final_val_loss"] - 2.00})
    assert (headwise["verdict"], headwise["ci"], headwise["family"]) == ("not tested", None, "granularity")


def test_html_and_csv_formats(grid, tmp_path):
    home = str(grid["store"].home)
    assert main(["report", str(grid["file"]), "--home", home, "--out", str(tmp_path), "--format", "html"]) == 0
    page = (tmp_path / "report.html").read_text()
    assert page.count("<img src='data:image/png;base64,") == len(FIGURES) and "<th>PPL (paper, 15A2B MoE)</th>" in page
    assert main(["report", str(grid["file"]), "--home", home, "--out", str(tmp_path), "--format", "csv"]) == 0
    with (tmp_path / "report.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["variant"] for r in rows] == VARIANTS
    assert float(rows[0]["ppl_ours_mean"]) == pytest.approx((math.exp(2.0) + math.exp(2.1)) / 2)
    assert rows[1]["ppl_paper"] == "5.761" and rows[1]["test"] == "paired t-test" and float(rows[1]["p_value"]) > 0
    with (tmp_path / "unfinished.csv").open() as handle:
        assert sorted(r["status"] for r in csv.DictReader(handle)) == ["new", "running"]


def test_report_prints_no_artifact_progress_bars(grid, capsys, tmp_path):
    # MLflow draws one tqdm bar per artifact it moves (each trial's probes.json, each figure) unless told not to.
    capsys.readouterr()
    assert main(["report", str(grid["file"]), "--home", str(grid["store"].home), "--out", str(tmp_path / "again")]) == 0
    err = capsys.readouterr().err
    assert "Downloading artifacts" not in err and "Uploading artifacts" not in err and "iB/s" not in err, err[-500:]
