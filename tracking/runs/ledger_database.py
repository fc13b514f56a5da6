"""The ledger read straight from the home's MLflow database, for the commands a user waits on (`gatelab status`, the
dry run, a resubmit deciding what is left): the same records as tracking/runs/ledger.py `trial_runs_by_key`, in
three queries instead of MLflow's search through the server, and without importing MLflow.

Measured on 1,000 finished trials (docs/benchmarks.md, `gatelab bench scale`): MLflow's `search_runs` through the
home's server took 1.4-3 s (the server loads every tag, param and metric as ORM objects, then both ends convert
them to JSON), and importing MLflow 1.1 s more; these queries take ~20 ms. They read MLflow's own tables
(`experiments`, `runs`, `tags`, `latest_metrics`, `params`), whose layout has held since MLflow 1.x; a test reads
one store both ways and compares (tests/test_ledger_database.py), so an MLflow upgrade that changes it fails there.
Only for the home's own database: a grid whose `tracking.uri` names another server is read through MLflow."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

from gatelab.tracking.runs.trial_record import RECORD_TAGS, TrialRecord, trial_record
from gatelab.trainer.config.run_tags import GRID_TAG, KEY_TAG, KIND_TAG

ACTIVE = "active"  # MLflow's lifecycle_stage of a run or experiment not deleted (search_runs' ACTIVE_ONLY)

_RUNS = """
    select r.run_uuid, r.start_time, r.end_time, t.value from runs r
    join tags t on t.run_uuid = r.run_uuid and t.key = :key_tag
    join tags k on k.run_uuid = r.run_uuid and k.key = :kind_tag and k.value = 'trial'
    where r.experiment_id = :experiment and r.lifecycle_stage = :active
    order by r.start_time, r.run_uuid
"""
_OF_EXPERIMENT = "select run_uuid from runs where experiment_id = :experiment and lifecycle_stage = :active"
_TAGS = f"select run_uuid, key, value from tags where key in :tags and run_uuid in ({_OF_EXPERIMENT})"
_METRICS = f"select run_uuid, key, value, is_nan from latest_metrics where run_uuid in ({_OF_EXPERIMENT})"
_PARAMS = f"select run_uuid, key, value from params where run_uuid in ({_OF_EXPERIMENT})"


def read_only_url(database_uri: str) -> str:
    """A SQLite file opened read-only (a reader never creates or locks it for writing); other databases as given."""
    prefix = "sqlite:///"
    if database_uri.startswith(prefix):
        return f"sqlite:///file:{database_uri[len(prefix) :]}?mode=ro&uri=true"
    return database_uri


@contextmanager
def _connected(database_uri: str) -> Iterator:
    """One connection, closed after (no pool left behind in a long-lived driver)."""
    import sqlalchemy  # MLflow's own dependency; imported where it is needed, for a fast CLI start

    engine = sqlalchemy.create_engine(read_only_url(database_uri), poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as db:
            yield db
    finally:
        engine.dispose()


def _has_tables(db) -> bool:
    """False for a database no MLflow server has set up yet (a PostgreSQL database named before the first submit)."""
    import sqlalchemy

    return sqlalchemy.inspect(db).has_table("experiments")


def trial_runs_from_database(database_uri: str, experiment: str) -> dict[str, list[TrialRecord]]:
    """Every trial child run of the experiment, by trial key, oldest first (as `trial_runs_by_key`)."""
    import sqlalchemy

    with _connected(database_uri) as db:
        if not _has_tables(db):
            return {}
        found = db.execute(
            sqlalchemy.text("select experiment_id from experiments where name = :name"), {"name": experiment}
        ).first()
        if found is None:
            return {}
        where = {"experiment": found[0], "active": ACTIVE}
        runs = db.execute(sqlalchemy.text(_RUNS), {**where, "key_tag": KEY_TAG, "kind_tag": KIND_TAG}).fetchall()
        tags, metrics, params = defaultdict(dict), defaultdict(dict), defaultdict(dict)
        tag_query = sqlalchemy.text(_TAGS).bindparams(sqlalchemy.bindparam("tags", expanding=True))
        for run_id, key, value in db.execute(tag_query, {**where, "tags": list(RECORD_TAGS)}):
            tags[run_id][key] = value
        for run_id, key, value, is_nan in db.execute(sqlalchemy.text(_METRICS), where):
            metrics[run_id][key] = float("nan") if is_nan else float(value)
        for run_id, key, value in db.execute(sqlalchemy.text(_PARAMS), where):
            params[run_id][key] = value
    records: dict[str, list[TrialRecord]] = {}
    for run_id, start_ms, end_ms, key in runs:
        record = trial_record(run_id, tags[run_id], metrics[run_id], params[run_id], start_ms, end_ms)
        records.setdefault(key, []).append(record)
    return records


def trial_records_from_database(database_uri: str, experiment: str) -> dict[str, TrialRecord]:
    """Every trial's newest run, by trial key (as `trial_records`)."""
    return {key: runs[-1] for key, runs in trial_runs_from_database(database_uri, experiment).items()}


def grid_run_from_database(database_uri: str, experiment: str, grid_name: str) -> tuple[str, dict[str, str]] | None:
    """The grid's parent run (as `ensure_parent_run` finds it): (its MLflow status, its tags), None when absent."""
    import sqlalchemy

    with _connected(database_uri) as db:
        if not _has_tables(db):
            return None
        found = db.execute(sqlalchemy.text(_GRID_RUN), {"name": experiment, "grid": grid_name, "active": ACTIVE})
        row = found.first()
        if row is None:
            return None
        tags = db.execute(sqlalchemy.text("select key, value from tags where run_uuid = :run"), {"run": row[0]})
        return row[1], dict(tags.fetchall())


_GRID_RUN = f"""
    select r.run_uuid, r.status from runs r join experiments e on e.experiment_id = r.experiment_id
    join tags k on k.run_uuid = r.run_uuid and k.key = '{KIND_TAG}' and k.value = 'grid'
    join tags g on g.run_uuid = r.run_uuid and g.key = '{GRID_TAG}' and g.value = :grid
    where e.name = :name and r.lifecycle_stage = :active
    order by r.start_time desc
"""
