"""`gatelab report` end to end for each kind of grid a user can write: zipped axes with include/exclude
submitted with `--set`, an LR sweep, and a DDP grid. Each is submitted with `gatelab submit` on a real local
Ray and a real MLflow server (tiny preset, a few steps), then reported, and the report's content is checked
against the runs MLflow holds. Plain grids: tests/test_report.py; searches: tests/test_search.py."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import ray
import yaml

from gatelab.grid.cli.main import main
from gatelab.grid.dispatch.local_ray import init_local_ray
from gatelab.grid.spec.expand import expand
from gatelab.grid.spec.grid_file import load_grid
from gatelab.tracking.runs.ledger import trial_records
from gatelab.tracking.stats.rows import max_stable_lr

from grid_helpers import child_runs

pytestmark = [pytest.mark.ray, pytest.mark.mlflow]

PNG = b"\x89PNG\r\n\x1a\n"
BASE = {
    "model": {"preset": "tiny"},
    "optim": {"warmup_steps": 2},
    "schedule": {"max_steps": 8, "batch_size": 4, "log_every": 1},
    "eval": {"every": 4, "batches": 1, "long_context_factors": [1]},
    "checkpoint": {"every": 8, "keep_last": 1},
}


@pytest.fixture(scope="module")
def local_ray():
    # 4 logical CPUs on a 2-core runner: the two 2-process DDP trials start side by side (most of their time
    # is Ray Train starting its workers, not training)
    init_local_ray(num_cpus=4, include_dashboard=False)
    yield
    ray.shutdown()


def _write(path: Path, **grid) -> Path:
    path.write_text(yaml.safe_dump({"name": path.stem, "base": BASE, **grid}, sort_keys=False))
    return path


def _submit_and_report(store, grid: Path, out: Path, capsys, *sets: str) -> str:
    """`gatelab submit` then `gatelab report` (with the same --set); the report command's output."""
    overrides = [arg for text in sets for arg in ("--set", text)]
    assert main(["submit", str(grid), "--home", str(store.home), *overrides]) == 0
    capsys.readouterr()
    assert main(["report", str(grid), "--home", str(store.home), "--out", str(out), *overrides]) == 0
    return capsys.readouterr().out


def _table(md: str, heading: str) -> list[dict]:
    section = md.split(f"## {heading}")[1].split("\n## ")[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    if not lines:
        return []
    header = [h.strip() for h in lines[0].strip("|").split(" | ")]
    return [dict(zip(header, (c.strip() for c in line.strip("|").split(" | ")))) for line in lines[2:]]


def _figures(out: Path, md: str) -> set[str]:
    """The PNGs written and linked from the report."""
    written = {p.name for p in out.glob("*.png") if p.read_bytes()[:8] == PNG}
    assert {name for name in written if f"]({name})" in md} == written
    return written


# --- zipped axes, include and exclude, submitted with --set ------------------------------------------------

# A parameter-matched comparison written with `combine: zip`: the baseline gets a third layer, the gated
# variant keeps two. The third zip point is excluded; the include adds a variant at the base's shape.
ZIPPED = {
    "combine": "zip",
    "axes": {
        "variant": ["baseline", "g1_elementwise_sigmoid", "g1_headwise_sigmoid"],
        "model.overrides.n_layers": [3, 2, 1],
    },
    "include": [{"variant": "g1_headwise_sigmoid"}],
    "exclude": [{"model.overrides.n_layers": 1}],
    "ray": {"max_concurrent": 2, "max_retries": 1},
}
ZIPPED_SET = "base.schedule.max_steps=6"


@pytest.fixture(scope="module")
def zipped(served_store, local_ray, tmp_path_factory):
    store, uri = served_store
    root = tmp_path_factory.mktemp("zipped")
    grid = _write(root / "zipped.yaml", **ZIPPED)
    overrides = ["--set", ZIPPED_SET]
    assert main(["submit", str(grid), "--home", str(store.home), *overrides]) == 0
    out = root / "report"
    assert main(["report", str(grid), "--home", str(store.home), "--out", str(out), *overrides]) == 0
    trials = expand(load_grid(grid, [ZIPPED_SET]))
    return {"store": store, "uri": uri, "grid": grid, "out": out, "trials": trials}


def test_zipped_grid_has_one_row_per_variant_and_pairs_across_the_zip(zipped):
    trials, md = zipped["trials"], (zipped["out"] / "report.md").read_text()
    assert sorted((t.config.variant, t.config.model.resolve().n_layers) for t in trials) == [
        ("baseline", 3),
        ("g1_elementwise_sigmoid", 2),
        ("g1_headwise_sigmoid", 2),  # the include; the zip point with n_layers=1 is excluded
    ]
    rows = {row["Variant"]: row for row in _table(md, "Results")}
    assert list(rows) == ["baseline", "g1_elementwise_sigmoid", "g1_headwise_sigmoid"]
    assert "Condition" not in next(iter(rows.values()))  # n_layers goes with the variant: not a condition
    records = trial_records(zipped["uri"], "zipped")
    ppl = {t.config.variant: records[t.key].metrics["final_val_ppl"] for t in trials}
    for variant in ("g1_elementwise_sigmoid", "g1_headwise_sigmoid"):
        assert rows[variant]["ΔPPL vs baseline (ours, paired by seed)"] == f"{ppl[variant] - ppl['baseline']:+.3f}"
        assert rows[variant]["Test (ours)"] == "n=1, no test"
    assert rows["baseline"]["PPL (ours)"] == f"{ppl['baseline']:.3f} (n=1)"
    # what each variant was trained with is said once, under the table
    assert "baseline: n_layers=3; g1_elementwise_sigmoid: n_layers=2; g1_headwise_sigmoid: n_layers=2." in md


def test_zipped_grid_report_finds_the_runs_submitted_with_set(zipped, capsys):
    md = (zipped["out"] / "report.md").read_text()
    assert "; 3 trials: 3 finished." in md
    assert _table(md, "Unfinished trials") == [] and "None: every trial has finished" in md
    records = trial_records(zipped["uri"], "zipped")
    assert {records[t.key].metrics["step"] for t in zipped["trials"]} == {6.0}  # the --set's max_steps
    assert {"forest.png", "loss_curves.png", "f_attn_heatmap.png", "gate_histograms.png"} <= _figures(zipped["out"], md)
    # the same grid without the submit's --set names other trials: the report says so, and how to fix it
    out = zipped["out"].parent / "without-set"
    assert main(["report", str(zipped["grid"]), "--home", str(zipped["store"].home), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "0 trials done, 3 unfinished" in printed
    assert "3 trial runs of experiment 'zipped' match none of this grid's trials" in printed
    assert "--set" in printed
    assert main(["status", str(zipped["grid"]), "--home", str(zipped["store"].home)]) == 0
    assert "3 trial runs of experiment 'zipped' match none of this grid's trials" in capsys.readouterr().out
    assert main(["status", str(zipped["grid"]), "--home", str(zipped["store"].home), "--set", ZIPPED_SET]) == 0
    assert "match none" not in capsys.readouterr().out


# --- an LR sweep ---------------------------------------------------------------------------------------

# LR 30 diverges on the tiny model within a few steps (as in tests/test_search.py): the sweep's top is unstable
SWEEP_LRS = [3.0e-3, 30.0]


def test_lr_sweep_report_has_the_max_stable_lr_table_by_the_sweep_rule(served_store, local_ray, tmp_path, capsys):
    store, uri = served_store
    grid = _write(
        tmp_path / "sweep.yaml",
        axes={"variant": ["baseline", "g1_elementwise_sigmoid"], "optim.lr": SWEEP_LRS, "seed": [0]},
        ray={"max_concurrent": 2, "max_retries": 1},
    )
    printed = _submit_and_report(store, grid, tmp_path / "out", capsys)
    assert "4 trials done, 0 unfinished" in printed
    md = (tmp_path / "out" / "report.md").read_text()
    trials, records = expand(load_grid(grid)), trial_records(uri, "sweep")
    sweep = {row["Variant"]: row for row in _table(md, "Learning-rate stability")}
    assert list(sweep) == ["baseline", "g1_elementwise_sigmoid"]
    client, runs = child_runs(uri, "sweep")
    [parent] = client.search_runs([runs[0].info.experiment_id], filter_string="tags.`gatelab.kind` = 'grid'")
    for variant, row in sweep.items():
        runs = {t.config.optim.lr: records[t.key] for t in trials if t.config.variant == variant}
        assert runs[30.0].status == "diverged" and row["LR 30"] == "diverged"
        low = runs[3.0e-3]
        assert row["LR 0.003"] == f"{low.metrics['final_val_loss']:.3f} / {low.metrics['spike_count']:.1f}"
        expected = max_stable_lr((lr, r.status, r.metrics.get("final_val_loss", math.nan)) for lr, r in runs.items())
        assert expected == 3.0e-3 and row["Max stable LR (ours)"] == "0.003"
        assert parent.data.metrics[f"max_stable_lr.{variant}"] == pytest.approx(expected)
    results = {row["Variant"]: row for row in _table(md, "Results")}
    assert {row["LR (ours, best)"] for row in results.values()} == {"0.003"}
    assert {row["Seeds (ours)"] for row in results.values()} == {"1"}  # at the best LR; the diverged one is at 30
    assert "lr_sweep.png" in _figures(tmp_path / "out", md)


# --- a DDP grid ----------------------------------------------------------------------------------------


def test_ddp_grid_report_reads_rank_zeros_results(served_store, local_ray, tmp_path, capsys):
    store, uri = served_store
    # seed 3: trials of their own (a DDP trial's key ignores its worker count, so seed 0 is another test's)
    grid = _write(
        tmp_path / "ddpgrid.yaml",
        axes={"variant": ["baseline", "g1_headwise_sigmoid"], "seed": [3]},
        resources={"gpus": 0, "cpus": 2, "workers": 2},
        ray={"max_concurrent": 2, "max_retries": 1},
    )
    assert load_grid(grid).resources.ddp_workers == 2
    printed = _submit_and_report(store, grid, tmp_path / "out", capsys)
    assert "2 trials done, 0 unfinished" in printed
    md = (tmp_path / "out" / "report.md").read_text()
    trials, records = expand(load_grid(grid)), trial_records(uri, "ddpgrid")
    for trial in trials:  # both ranks trained: rank 1 left its files beside rank 0's
        assert len(list((store.checkpoints_dir / trial.key / "other-ranks").iterdir())) == 1
    rows = {row["Variant"]: row for row in _table(md, "Results")}
    assert list(rows) == ["baseline", "g1_headwise_sigmoid"]
    for trial in trials:
        metrics = records[trial.key].metrics
        row = rows[trial.config.variant]
        assert row["PPL (ours)"] == f"{metrics['final_val_ppl']:.3f} (n=1)"
        assert row["F-Attn (ours)"] == f"{metrics['f_attn']:.3f}"
    assert rows["g1_headwise_sigmoid"]["Gate mean (ours)"] != "–"
    assert _table(md, "Unfinished trials") == []
    assert {"forest.png", "loss_curves.png", "f_attn_heatmap.png", "gate_histograms.png"} <= _figures(
        tmp_path / "out", md
    )
