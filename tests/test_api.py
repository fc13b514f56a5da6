"""The Python API (`import gatelab`) against a real local Ray and MLflow: docs/quickstart.ipynb is run top to bottom
once (nbclient, a real Jupyter kernel), submitting its small grid into a fresh home; every API function is then
checked against that home, and against what the CLI and MLflow say of the same runs."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

import gatelab

from grid_helpers import run_gatelab

pytestmark = [pytest.mark.ray, pytest.mark.mlflow, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "docs" / "quickstart.ipynb"
CELL_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """The notebook executed in a fresh home: {'notebook', 'home', 'grid'} (`grid` loaded with the overrides the
    notebook's own kernel reports, so the tests read exactly the trials it submitted)."""
    import nbclient
    import nbformat

    from gatelab.tracking import Store, stop_server

    home = tmp_path_factory.mktemp("home")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell("import json; print(json.dumps(list(grid.overrides)))"))
    before = os.environ.get("GATELAB_HOME")
    os.environ["GATELAB_HOME"] = str(home)  # the kernel inherits it; the notebook names no home of its own
    try:
        client = nbclient.NotebookClient(
            notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(home)}}
        )
        client.execute()
    finally:
        if before is None:
            os.environ.pop("GATELAB_HOME")
        else:
            os.environ["GATELAB_HOME"] = before
    overrides = json.loads(notebook.cells[-1].outputs[0]["text"])
    try:
        yield {"notebook": notebook, "home": home, "grid": gatelab.load_grid("smoke", set=overrides)}
    finally:
        stop_server(Store(home))
        import ray

        if ray.is_initialized():  # a resume below may have started one in this process
            ray.shutdown()


def _text(cell) -> str:
    return "".join(out.get("text", "") + json.dumps(out.get("data", {})) for out in cell.get("outputs", []))


def test_the_notebook_runs_top_to_bottom_and_says_what_it_did(ran):
    cells = [c for c in ran["notebook"].cells if c.cell_type == "code"]
    errors = [out for c in cells for out in c.outputs if out.output_type == "error"]
    assert not errors, errors[0]["evalue"] if errors else ""
    n = len(ran["grid"].expanded)
    assert n == 12
    submitted = next(c for c in cells if "gatelab.submit(" in c.source)
    assert f"grid smoke: {n} done, 0 failed" in _text(submitted)
    plots = [c for c in cells if "image/png" in json.dumps([o.get("data", {}) for o in c.outputs])]
    assert len(plots) == 3  # per family, the forest, the curves


def test_results_has_one_row_per_trial_with_axes_metrics_and_the_current_run(ran):
    grid, home = ran["grid"], ran["home"]
    df = gatelab.results(grid, home=home)
    trials = {t.key: t for t in grid.expanded}
    assert list(df.key) == list(trials) and df.key.is_unique
    assert set(df.status) == {"finished"}
    for row in df.itertuples():
        config = trials[row.key].config
        assert (row.variant, row.seed, row.lr) == (config.variant, config.seed, config.optim.lr)
    assert df.loc[df.variant == "g1_headwise_sigmoid", "gate_granularity"].unique().tolist() == ["headwise"]
    assert df.loc[df.variant == "g1_elementwise_silu", "family"].unique().tolist() == ["activation"]
    assert df.loc[df.variant == "more_kv_heads", "family"].unique().tolist() == ["controls"]
    assert list(df.columns[df.columns.get_loc("est_flops") + 1 :][:2]) == ["final_val_loss", "final_val_ppl"]
    assert all(math.isclose(p, math.exp(v), rel_tol=1e-4) for p, v in zip(df.final_val_ppl, df.final_val_loss))
    assert "metric.lr" in df.columns  # the scheduled LR at the last step, apart from the trial's configured lr
    # the run ids are the ledger's current runs: the ones `gatelab status` shows
    shown = gatelab.status(grid, home=home)
    assert dict(zip(df.key, df.run_id)) == {row.key: row.run_id for row in shown.rows}
    picked = gatelab.results(grid, home=home, metrics=["final_val_loss", "no_such_metric"])
    assert list(picked.columns[-2:]) == ["final_val_loss", "no_such_metric"] and picked.no_such_metric.isna().all()


def test_history_is_the_runs_logged_history(ran):
    from mlflow.tracking import MlflowClient

    from gatelab.tracking import Store, ensure_server

    grid, home = ran["grid"], ran["home"]
    long = gatelab.results(grid, home=home, history=True, metrics=["train_loss", "val_loss"])
    assert set(long.metric) == {"train_loss", "val_loss"} and long.key.nunique() == len(grid.expanded)
    client = MlflowClient(tracking_uri=ensure_server(Store(home))[0].uri)
    for metric in ("train_loss", "val_loss"):
        one = long[long.metric == metric].iloc[-1]
        logged = sorted((m.step, m.value) for m in client.get_metric_history(one.run_id, metric))
        got = long[(long.run_id == one.run_id) & (long.metric == metric)]
        assert list(zip(got.step, got.value)) == logged and logged
    assert len(logged) < len(got_train := long[(long.run_id == one.run_id) & (long.metric == "train_loss")])
    assert list(got_train.step) == list(range(5, 41, 5))  # log_every 5 of 40 steps


def test_compare_returns_the_reports_forest_rows(ran, tmp_path):
    grid, home = ran["grid"], ran["home"]
    cmp = gatelab.compare(grid, home=home)
    written = gatelab.report(grid, home=home, out=tmp_path / "report")
    forest = json.loads((tmp_path / "report" / "forest.json").read_text())
    assert written.document == tmp_path / "report" / "report.md" and written.parent_run_id
    assert list(cmp.label) == [row["label"] for row in forest["rows"]]
    assert "baseline" not in set(cmp.variant) and len(cmp) == 5
    for mine, theirs in zip(cmp.itertuples(), forest["rows"]):
        assert mine.n == theirs["n"] == 2 and mine.verdict == theirs["verdict"]
        assert math.isclose(mine.diff, theirs["mean"]) and mine.p_value == pytest.approx(theirs["p_value"])
        assert [mine.ci_low, mine.ci_high] == pytest.approx(theirs["ci"])
        assert mine.ci_low < mine.diff < mine.ci_high
    # each difference is the variant's final val loss minus the baseline's, seed by seed, from the results table
    df = gatelab.results(grid, home=home).set_index(["variant", "seed"]).final_val_loss
    first = cmp.iloc[0]
    assert first.per_seed == pytest.approx({s: df[first.variant, s] - df["baseline", s] for s in (0, 1)})


def test_status_rows_are_what_the_cli_prints(ran):
    grid, home = ran["grid"], ran["home"]
    found = gatelab.status(grid, home=home)
    assert found.counts() == {"finished": 12} and found.other_runs == 0
    args = ["status", "smoke", "--json", "--home", str(home)]
    for override in grid.overrides:
        args += ["--set", override]
    printed = run_gatelab(*args)
    assert printed.returncode == 0, printed.stderr
    assert json.loads(printed.stdout) == [row.to_json() for row in found.rows]
    assert list(found.frame().columns)[:3] == ["key", "variant", "status"]


def test_resume_of_a_finished_grid_runs_nothing(ran, capsys):
    summary = gatelab.resume(ran["grid"], home=ran["home"], progress="lines")
    assert (summary.skipped, summary.done, summary.failed, summary.ok) == (12, 12, 0, True)
    assert "12 already done or failed, 0 to run" in capsys.readouterr().out
    quiet = gatelab.submit(ran["grid"], home=ran["home"], progress=False)
    assert quiet.skipped == 12 and capsys.readouterr().out == ""


def test_the_mlflow_compare_page_lists_the_grids_runs(ran):
    pages = gatelab.mlflow_pages(ran["grid"], home=ran["home"])
    df = gatelab.results(ran["grid"], home=ran["home"])
    assert set(pages.run_ids) == set(df.run_id)
    assert pages.compare.startswith("http://127.0.0.1:") and "compare-runs" in pages.compare
