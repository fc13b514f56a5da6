"""How a command reaches a home's ledger, written once for the CLI and the Python API (`import gatelab`): the
store to read without creating anything, the ledger's records as stored, and the tracking URI a driver logs to.

The home's own database is read directly (tracking/runs/ledger_database.py: no MLflow import, ~20 ms for 1,000
trials); a grid's own `tracking.uri` through MLflow."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gatelab.tracking.store import Store, resolve_home


def reading_store(home: str | Path | None) -> Store:
    """The home's Store, checked but not created: bad input (a home that is a file, a refused backend) fails here,
    before anything is read, made or started."""
    store = Store(resolve_home(None if home is None else str(home)))
    store.check_folders()
    store.check_backend()
    return store


def ledger_records(spec, store: Store) -> dict:
    """The ledger as stored (trial key -> TrialRecord), read without starting anything (an absent store means: all
    new) unless trials kept results on disk while the server was away: those are sent first, through the home's
    server."""
    from gatelab.grid.dispatch.ray_jobs import experiment_name
    from gatelab.trainer.config.trial_folder import journals

    if spec.tracking.uri is not None:
        from gatelab.tracking.runs.catch_up import catch_up
        from gatelab.tracking.runs.ledger import trial_records

        catch_up(spec.tracking.uri, spec.storage.root(store.checkpoints_dir))
        return trial_records(spec.tracking.uri, experiment_name(spec))
    if not store.has_ledger:
        return {}
    if journals(spec.storage.root(store.checkpoints_dir)):
        from gatelab.tracking.runs.catch_up import catch_up
        from gatelab.tracking.server.process import ensure_server

        server, _ = ensure_server(store)  # artifacts in the journals reach the store only through it
        catch_up(server.uri, spec.storage.root(store.checkpoints_dir))
    from gatelab.tracking.runs.ledger_database import trial_records_from_database

    for attempt in range(5):
        try:
            return trial_records_from_database(store.tracking_uri, experiment_name(spec))
        except Exception:  # a server still creating a fresh store's tables: wait for it
            if attempt == 4:
                raise
            time.sleep(1.0)


@contextmanager
def driver_tracking(spec, store: Store) -> Iterator[str]:
    """The tracking URI a driver logs to, after sending what trials kept on disk while it was away
    (tracking/runs/catch_up.py). The home's own server is kept up while the driver runs (tracking/server/watch.py)
    and outlives it: a concurrent submit or a trial may still be logging through it."""
    from gatelab.tracking.runs.catch_up import catch_up
    from gatelab.tracking.server.process import local_server
    from gatelab.tracking.server.watch import ServerWatch

    checkpoint_root = spec.storage.root(store.checkpoints_dir)
    if spec.tracking.uri:
        catch_up(spec.tracking.uri, checkpoint_root)
        yield spec.tracking.uri
        return
    with local_server(store, keep_running=True) as uri, ServerWatch(store, uri):
        catch_up(uri, checkpoint_root)
        yield uri


@contextmanager
def reading_uri(spec, store: Store) -> Iterator[str]:
    """A server URI to read a grid's runs through (histories in bulk, artifacts): the grid's own `tracking.uri`, or
    the home's server, started for the reader when none runs (and stopped after, as `gatelab report` does)."""
    from gatelab.tracking.server.process import local_server

    if spec.tracking.uri:
        yield spec.tracking.uri
        return
    if not store.has_ledger:
        raise ValueError(f"no MLflow store at {store.db_path}; submit the grid first (or pass the home it ran in)")
    with local_server(store) as uri:
        yield uri
