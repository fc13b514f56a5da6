"""The request a trial's process has at the MLflow server when it dies, and how its next attempt waits for it.

A request outlives its sender: when a node is lost, the server may still hold the last request each of its trial
processes sent, and commit it seconds later, the more so the busier it is. Ray retries the trial at once on another
node; that attempt read the ledger before the request landed, so it made a second run for the trial (the dead
one's `create_run` committed after it looked) or logged again steps the dead one had sent (measured with
`gatelab bench scale`, 64 trials at once on 2 cores, a node removed: 1 duplicated run and 2 trials with a doubled
step in 192).

So a trial's process notes in the trial's folder the one request it has in flight (its sender sends one at a time,
in order): a run it is creating (by the random id it tags the run with) or a batch of metrics (the highest step
of each). The note is removed when the answer comes. The next attempt, before it reads anything, waits until what
the note names is in the ledger, or SETTLE_MAX_S has passed (the request was lost with its process, or the server
dropped it). Only a process that died mid-request leaves a note, so a normal resume waits for nothing."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

SETTLE_MAX_S = 60.0  # longer than a request waits in a busy server (SQLite's lock: 20 s; then MLflow answers 503)
SETTLE_POLL_S = 1.0


class InFlight:
    """The trial folder's note of the request in flight (path None: no note, as for a run outside a grid)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    @contextmanager
    def creating(self, opened_by: str) -> Iterator[None]:
        """Around creating the run tagged OPENED_BY_TAG=`opened_by`."""
        with self._noted({"create": opened_by}):
            yield

    @contextmanager
    def sending(self, run_id: str, metrics: list) -> Iterator[None]:
        """Around sending a batch (its metrics as (key, value, timestamp, step)); a batch without metrics needs
        no note (tags and params land the same whenever they land)."""
        steps: dict[str, int] = {}
        for key, _, _, step in metrics:
            steps[key] = max(int(step), steps.get(key, -1))
        with self._noted({"run_id": run_id, "steps": steps} if steps else None):
            yield

    @contextmanager
    def _noted(self, note: dict | None) -> Iterator[None]:
        if self.path is None or note is None:
            yield
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)  # `gatelab train` opens the run before it makes the folder
        tmp.write_text(json.dumps(note))
        os.replace(tmp, self.path)
        yield  # an exception leaves the note: the request may still land (the server did not answer in time)
        self.path.unlink(missing_ok=True)


def settle(path: Path, landed: Callable[[Mapping], bool], *, sleep=time.sleep, clock=time.monotonic) -> float:
    """Wait until what a dead earlier process had in flight is in the ledger (`landed(note)`), at most SETTLE_MAX_S;
    then remove the note. Returns the seconds waited (0 when there is no note)."""
    try:
        note = json.loads(path.read_text())
    except (OSError, ValueError):  # no note, or half-written (the process died writing it: nothing was sent)
        return 0.0
    started = clock()
    while not landed(note) and clock() - started < SETTLE_MAX_S:
        sleep(SETTLE_POLL_S)
    path.unlink(missing_ok=True)
    return clock() - started
