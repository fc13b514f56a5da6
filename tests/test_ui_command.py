"""`gatelab ui GRID` as a user runs it, against a real MLflow server holding some of the grid's trial runs (made
through the ledger, as a worker makes them; no training). The browser side is tests/test_mlflow_ui.py."""

from __future__ import annotations

import json
import os
import subprocess
from urllib.parse import unquote

import pytest
from mlflow.tracking import MlflowClient

from gatelab.grid.spec.expand import expand
from gatelab.grid.spec.grid_file import load_grid
from gatelab.tracking import Store, ensure_server, stop_server
from gatelab.tracking.runs.ledger import TrialRun, ensure_parent_run, open_trial_run
from gatelab.trainer.config.trial import run_params, run_tags

from grid_helpers import run_gatelab, write_grid

pytestmark = [pytest.mark.mlflow]

VARIANTS = ["baseline", "g1_elementwise_sigmoid", "g1_headwise_sigmoid"]


@pytest.fixture(scope="module")
def grid_home(tmp_path_factory):
    """A home whose server holds runs for the first two of a 3-trial grid; a third grid's experiment is empty."""
    root = tmp_path_factory.mktemp("ui")
    grid_file = write_grid(root / "uigrid.yaml", "uigrid", VARIANTS)
    trials = expand(load_grid(grid_file))
    store = Store.open(str(root / "home"))
    info, _ = ensure_server(store)
    try:
        parent = ensure_parent_run(info.uri, "uigrid", "uigrid", {}, store.locks_dir)
        run_ids = []
        for trial in trials[:2]:
            tags = {"gatelab.grid": "uigrid", **run_tags(trial.config)}
            run = TrialRun(
                uri=info.uri,
                experiment="uigrid",
                key=trial.key,
                run_name=trial.label,
                parent_run_id=parent,
                tags=tags,
                params=run_params(trial.config),
            )
            tracker, _ = open_trial_run(run)
            tracker.set_status("finished")
            run_ids.append(tracker.run_id)
        yield {"file": grid_file, "store": store, "uri": info.uri, "run_ids": run_ids, "trials": trials}
    finally:
        stop_server(store)


def _ui(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_gatelab("ui", *args, env={**os.environ, **(env or {})}, timeout=120)


def test_ui_grid_prints_the_compare_page_of_the_grids_runs_and_opens_it(grid_home, tmp_path):
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser.sh"  # Python's webbrowser runs $BROWSER with the address
    browser.write_text(f'#!/bin/sh\nprintf "%s\\n" "$1" >> {opened}\n')
    browser.chmod(0o755)
    # A server already runs for the home: `gatelab ui` reuses it, prints the addresses and returns.
    result = _ui(
        str(grid_home["file"]), "--home", str(grid_home["store"].home), "--open", env={"BROWSER": str(browser)}
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out, uri, run_ids = result.stdout, grid_home["uri"], grid_home["run_ids"]
    experiment_id = MlflowClient(uri).get_experiment_by_name("uigrid").experiment_id
    assert f"already running at {uri}" in out and "grid uigrid: 2 of 3 trials have runs" in out, out
    compare = next(word for word in out.split() if "#/compare-runs?" in word)
    assert compare.startswith(f"{uri}/#/compare-runs?runs=")
    query = dict(part.split("=", 1) for part in compare.split("?", 1)[1].split("&"))
    assert json.loads(unquote(query["runs"])) == run_ids  # the grid's runs, in the grid's order
    assert json.loads(unquote(query["experiments"])) == [experiment_id]
    assert f"{uri}/#/experiments/{experiment_id}/runs?workflowType=machine_learning" in out.split()
    assert opened.read_text().split() == [compare]
    params = MlflowClient(uri).get_run(run_ids[1]).data.params
    assert (params["gate_position"], params["gate_granularity"], params["seed"]) == ("g1", "elementwise", "0")


def test_ui_grid_without_runs_says_so(grid_home, tmp_path):
    other = write_grid(tmp_path / "fresh.yaml", "fresh", VARIANTS[:1])
    result = _ui(str(other), "--home", str(grid_home["store"].home))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "grid fresh has no MLflow runs in this store yet" in result.stdout
    assert "compare-runs" not in result.stdout


def test_ui_grid_on_a_remote_tracking_uri_uses_that_server(grid_home, tmp_path):
    # The grid logs to a server of its own (here: the same one, named by tracking.uri); no local server starts.
    result = _ui(
        str(grid_home["file"]),
        "--home",
        str(tmp_path / "unused-home"),
        "--set",
        f"tracking.uri={grid_home['uri']}",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "already running" not in result.stdout and all(r in result.stdout for r in grid_home["run_ids"])
    assert not (tmp_path / "unused-home").exists()
