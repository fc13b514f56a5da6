"""A trial run's outbox: what its tracker logged that the MLflow server has not yet confirmed, in order.

Why: the tracking server can go away mid-grid (killed, restarted, a network blip). Training must not wait for
it, and nothing logged may be lost or stored twice:
- an operation leaves the outbox only once the server confirmed it, so a request that failed (or whose answer
  was lost) is sent again; MLflow stores a metric (key, value, timestamp, step) once however often it arrives,
  and tags, params, statuses and artifacts are the same when written twice, so sending again is harmless;
- while the server is away the outbox is written to the trial's folder (its journal, trainer/config/trial_folder.py)
  before every checkpoint and when the trial ends, so a worker killed meanwhile loses nothing: the next process
  that opens the trial, or `gatelab submit|resume|status`, sends the journal first (`tracking/runs/catch_up.py`);
- it is bounded (`max_metrics`): when full, logging waits for the server rather than growing without limit.

Operations are JSON-able dicts, one per line in the journal:
  {"op": "batch", "metrics": [[key, value, timestamp_ms, step], ...], "params": [[key, value]], "tags": [...]}
  {"op": "status", "status": "FINISHED", "end_time": ms or null}   (MLflow's run status)
  {"op": "artifact", "path": "/abs/local/file", "dir": "plots" or null}
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable
from pathlib import Path

from mlflow.utils.validation import (
    MAX_BATCH_LOG_REQUEST_SIZE,
    MAX_ENTITIES_PER_BATCH,
    MAX_METRICS_PER_BATCH,
    MAX_PARAMS_TAGS_PER_BATCH,
)

MAX_BUFFERED_METRICS = 500_000  # ~100 MB of Python objects: hours of a fast trial's logging


# The bytes a metric, param or tag adds to a log-batch request beyond its key, value (and timestamp, step) as
# json.dumps writes them: MLflow's field names, indentation and separators (message_to_json writes 73 more per
# metric, 40 per param or tag, measured), with room to spare; tests/test_outbox.py checks it is an upper bound.
ENTITY_JSON_OVERHEAD = 96
REQUEST_JSON_OVERHEAD = 256  # the run id and the request's own braces
KINDS = ("metrics", "params", "tags")  # what a batch operation carries


def batch_op(metrics=(), params=(), tags=()) -> dict:
    return {"op": "batch", "metrics": [list(m) for m in metrics], "params": [list(p) for p in params],
            "tags": [list(t) for t in tags]}  # fmt: skip


def metric_count(op: dict) -> int:
    return len(op.get("metrics", ())) if op["op"] == "batch" else 0


def _entity_bytes(entity) -> int:
    return len(json.dumps(entity)) + ENTITY_JSON_OVERHEAD


def _accepted(metrics: int, params: int, tags: int, request_bytes: int) -> bool:
    """Whether MLflow's server accepts a log-batch request of this size: every limit it checks
    (mlflow.utils.validation, _validate_batch_log_limits and the request's byte size)."""
    return (
        metrics <= MAX_METRICS_PER_BATCH
        and params <= MAX_PARAMS_TAGS_PER_BATCH
        and tags <= MAX_PARAMS_TAGS_PER_BATCH
        and metrics + params + tags <= MAX_ENTITIES_PER_BATCH
        and request_bytes <= MAX_BATCH_LOG_REQUEST_SIZE
    )


class _Request:
    """A log-batch request being filled, with the counts `_accepted` checks."""

    def __init__(self) -> None:
        self.op = batch_op()
        self.bytes = REQUEST_JSON_OVERHEAD

    def takes(self, added: dict[str, int], added_bytes: int) -> bool:
        counts = {kind: len(self.op[kind]) + added.get(kind, 0) for kind in KINDS}
        return _accepted(**counts, request_bytes=self.bytes + added_bytes)

    def add(self, kind: str, entities: list, entities_bytes: int) -> None:
        self.op[kind].extend(entities)
        self.bytes += entities_bytes


def batch_ops(metrics=(), params=(), tags=()) -> list[dict]:
    """One logging call's metrics, params and tags as batch operations, each one a request MLflow accepts,
    in order (usually a single operation)."""
    requests, op = [_Request()], batch_op(metrics, params, tags)
    for kind in KINDS:
        for entity in op[kind]:
            size = _entity_bytes(entity)
            if not requests[-1].takes({kind: 1}, size):
                requests.append(_Request())
            requests[-1].add(kind, [entity], size)
    return [r.op for r in requests if any(r.op[kind] for kind in KINDS)]


def merged(ops: Iterable[dict]) -> list[tuple[dict, int]]:
    """Consecutive batch operations joined into requests that MLflow accepts, order kept: [(request op, how
    many outbox operations it carries)]. An operation is never split (batch_ops made each one a request MLflow
    accepts), so a confirmed request confirms whole operations."""
    out: list[tuple[dict, int]] = []
    filling: _Request | None = None  # the batch request at the end of `out`, while more may join it
    for op in ops:
        if op["op"] != "batch":
            out.append((op, 1))
            filling = None
            continue
        counts = {kind: len(op[kind]) for kind in KINDS}
        sizes = {kind: sum(map(_entity_bytes, op[kind])) for kind in KINDS}
        if filling is None or not filling.takes(counts, sum(sizes.values())):
            filling = _Request()
            out.append((filling.op, 0))
        for kind in KINDS:
            filling.add(kind, op[kind], sizes[kind])
        out[-1] = (filling.op, out[-1][1] + 1)
    return out


class Outbox:
    """Pending operations of one run, oldest first; thread-safe (training adds, a sender confirms)."""

    def __init__(self, run_id: str, journal: Path | None = None, max_metrics: int = MAX_BUFFERED_METRICS) -> None:
        self.run_id, self.journal, self.max_metrics = run_id, journal, max_metrics
        self._ops: list[dict] = []
        self._metrics = 0
        self._lock = threading.RLock()
        self._journaled = False  # only a journal this outbox wrote is its to remove (DDP ranks share a trial's)

    def add(self, op: dict) -> None:
        with self._lock:
            self._ops.append(op)
            self._metrics += metric_count(op)

    def pending(self) -> list[dict]:
        """A copy of what is unconfirmed, oldest first."""
        with self._lock:
            return list(self._ops)

    def confirm(self, count: int) -> None:
        """The oldest `count` operations are stored by the server."""
        with self._lock:  # one lock with save(): a journal never outlives the confirmation of all it holds
            done, self._ops = self._ops[:count], self._ops[count:]
            self._metrics -= sum(metric_count(op) for op in done)
            if not self._ops:
                self.forget_journal()

    def __len__(self) -> int:
        return len(self._ops)

    def full(self) -> bool:
        return self._metrics >= self.max_metrics

    @property
    def metrics(self) -> int:
        return self._metrics

    def save(self) -> bool:
        """Write what is pending to the journal, durably (temporary file, fsync, rename); False when there is no
        journal. Nothing pending: the journal is removed."""
        if self.journal is None:
            return False
        with self._lock:
            if not self._ops:
                self.forget_journal()
                return True
            write_journal(self.journal, self.run_id, self._ops)
            self._journaled = True
        return True

    def forget_journal(self) -> None:
        if self.journal is not None and self._journaled:
            self.journal.unlink(missing_ok=True)
            self._journaled = False


def write_journal(path: Path, run_id: str, ops: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as handle:
        handle.write(json.dumps({"run_id": run_id}) + "\n")
        for op in ops:
            handle.write(json.dumps(op) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def read_journal(path: Path) -> tuple[str, list[dict]]:
    """(run id, operations) of a journal written by `write_journal` (whole, by its atomic rename)."""
    header, *lines = path.read_text().splitlines()
    return json.loads(header)["run_id"], [json.loads(line) for line in lines if line.strip()]
