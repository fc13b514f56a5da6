"""The shipped smoke ladder as a user runs it: `gatelab submit ladder_smoke`, killed mid-ladder (SIGKILL to the
driver and everything it started), `gatelab resume ladder_smoke`, then `gatelab report ladder_smoke`, which
writes the fit's verdict at the target, the rung table, both figures and ladder.json."""

import json

import pytest

from gatelab.grid.cli.main import main
from gatelab.tracking import Store, stop_server

from grid_helpers import child_runs, gatelab, kill_group, statuses, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.mlflow, pytest.mark.slow]


def _finished(home) -> dict:
    return {k: r for k, r in statuses("ladder_smoke", home).items() if r["status"] == "finished"}


def test_submit_kill_resume_then_report_a_ladder(tmp_path):
    home = tmp_path / "home"
    try:
        proc = gatelab("submit", "ladder_smoke", home=home)
        wait_for(lambda: Store(home).db_path.exists() and len(_finished(home)) >= 3, 600, proc, "3 finished trials")
        kill_group(proc)
        before = _finished(home)
        assert 3 <= len(before) < 16, before
        resume = gatelab("resume", "ladder_smoke", home=home)
        out, _ = resume.communicate(timeout=900)
        assert resume.returncode == 0 and "grid ladder_smoke: 16 done, 0 failed" in out, out
        after = statuses("ladder_smoke", home)
        assert all(after[k]["run_id"] == row["run_id"] for k, row in before.items())  # not run again
        assert main(["report", "ladder_smoke", "--home", str(home), "--out", str(tmp_path / "report")]) == 0
    finally:
        stop_server(Store(home))
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## Model ladder: the answer at the target scale" in report
    verdict = next(line for line in report.splitlines() if line.startswith("g1_elementwise_sigmoid: "))
    assert any(f": {v} at 4.08e+21 FLOPs" in verdict for v in ("holds", "flips", "inconclusive")), verdict
    assert "the paper measured -0.0127 nats" in verdict and "backtest: predicted" in verdict
    for figure in ("ladder_loss.png", "ladder_delta.png"):
        assert (tmp_path / "report" / figure).stat().st_size > 10_000
    data = json.loads((tmp_path / "report" / "ladder.json").read_text())
    assert data["result"]["extrapolation_factor"] > 1e9 and data["result"]["resamples"] >= 900
    rungs = {(r["rung"], r["variant"]) for r in data["rungs"]}
    assert rungs == {(i, v) for i in range(4) for v in ("baseline", "g1_elementwise_sigmoid")}
    # each trial's rung, size and FLOPs are run params: the MLflow UI plots loss against them
    _, runs = child_runs(f"sqlite:///{home}/mlflow.db", "ladder_smoke")
    assert sorted(int(r.data.params["ladder.rung"]) for r in runs) == sorted(list(range(4)) * 4)
    assert all(float(r.data.params["ladder.train_flops"]) > 0 for r in runs)
    assert all(r.info.status == "FINISHED" for r in runs)  # one run per trial: the resumed ones continued theirs
