"""The ledger on a real PostgreSQL server (tests/postgres_helpers.py starts one from Debian's package): a grid
submits with GATELAB_MLFLOW_BACKEND set, its driver is killed mid-grid, `gatelab resume` finishes it, status
and report read it; every run is in the database, none in a SQLite file. And the backend is bad input where it
should be: a scheme gatelab does not test, or a home that already keeps its runs elsewhere (exit 2, one line)."""

import json
import os

import pytest
from mlflow import MlflowClient

from gatelab.tracking import Store, stop_server
from gatelab.tracking.store import BACKEND_ENV

from grid_helpers import child_runs, gatelab, kill_group, run_gatelab, statuses, wait_for, write_grid
from postgres_helpers import postgres_database, why_not_available

pytestmark = [
    pytest.mark.mlflow,
    pytest.mark.skipif(why_not_available() is not None, reason=str(why_not_available())),
]


@pytest.fixture(scope="module")
def database():
    with postgres_database() as uri:
        yield uri


@pytest.mark.ray
@pytest.mark.slow
def test_a_grid_on_postgresql_submits_survives_a_driver_kill_resumes_and_reports(database, tmp_path):
    home, env = tmp_path / "home", {BACKEND_ENV: database}
    grid = write_grid(
        tmp_path / "pg.yaml",
        "pggrid",
        ["baseline", "g1_elementwise_sigmoid", "g1_headwise_sigmoid"],
        max_steps=200,
        checkpoint_every=20,
        max_concurrent=1,  # one at a time: the kill comes while the second or third trains
    )
    try:
        proc = gatelab("submit", str(grid), home=home, env=env)
        wait_for(
            lambda: any(r["status"] == "finished" for r in statuses(grid, home, env).values()), 400, proc, "a trial"
        )
        kill_group(proc)
        before = statuses(grid, home, env)
        assert 1 <= sum(r["status"] == "finished" for r in before.values()) < 3, before
        resume = gatelab("resume", str(grid), home=home, env=env)
        out, _ = resume.communicate(timeout=600)
        assert resume.returncode == 0 and "grid pggrid: 3 done, 0 failed" in out, out
        assert {r["status"] for r in statuses(grid, home, env).values()} == {"finished"}
        report = run_gatelab("report", str(grid), "--home", str(home), env={**os.environ, **env})
        assert report.returncode == 0, report.stderr
        assert (home / "reports" / "pggrid" / "report.md").exists()
    finally:
        stop_server(Store(home, backend=database))
    _, runs = child_runs(database, "pggrid")
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs)  # one run per trial, in PostgreSQL
    assert not (home / "mlflow.db").exists()
    assert (home / "mlflow-backend.txt").read_text().strip() == database  # no password in this URI to hide
    assert MlflowClient(tracking_uri=database).get_experiment_by_name("pggrid") is not None


@pytest.mark.slow
def test_bench_ledger_runs_sqlite_and_postgresql_side_by_side(database, capsys):
    from gatelab.grid.cli.main import main

    load = ["--writers", "3", "--metrics", "20", "--rate", "5", "--seconds", "3"]
    assert main(["bench", "ledger", *load, "--postgres", database, "--json"]) == 0
    sqlite, postgres = json.loads(capsys.readouterr().out)
    assert (sqlite["backend"], postgres["backend"]) == ("sqlite", "postgresql")
    assert postgres["server_workers"] >= 2 and sqlite["server_workers"] == 1
    for result in (sqlite, postgres):
        assert result["violations"] == [] and result["points_stored"] == 3 * 20 * 15, result


def test_a_backend_gatelab_does_not_test_or_another_homes_database_is_refused(database, tmp_path):
    grid = write_grid(tmp_path / "g.yaml", "g", ["baseline"], max_steps=4)
    home = tmp_path / "home"
    bad = run_gatelab("submit", str(grid), "--home", str(home), env={**os.environ, BACKEND_ENV: "mysql://u@h/db"})
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert BACKEND_ENV in bad.stderr and "postgresql://" in bad.stderr and not home.exists()
    # a home whose server has run on one database refuses another (and the SQLite file), naming the first
    home.mkdir()
    Store(home, backend=database).check_backend()
    other = database.rsplit("/", 1)[0] + "/another"
    for env in ({**os.environ, BACKEND_ENV: other}, {k: v for k, v in os.environ.items() if k != BACKEND_ENV}):
        refused = run_gatelab("status", str(grid), "--home", str(home), env=env)
        assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert database in refused.stderr
