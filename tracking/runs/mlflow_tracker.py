"""`MlflowTracker`: the trainer's `Tracker` (trainer/tracker.py) backed by one MLflow run.

Each tracker owns an explicit `MlflowClient(tracking_uri)` rather than the fluent `mlflow.*` API, whose active
run and tracking URI are process globals: several trials in one process would clash.

Everything a trial logs goes into the run's outbox (tracking/runs/outbox.py) and is sent in order, metrics in
`log_batch` requests (docs/libraries.md, MLflow: at most 1000 metrics and 100 params+tags per batch). The
metrics of one `log_metrics` call always travel in the same batch (unless it alone exceeds 1000), so after a
crash the stored history is a prefix of what was logged: `last_steps()` never names a step whose metrics are half
stored. When the server does not answer, training goes on: the outbox keeps what is unsent, is written to the
trial's journal at every flush (before each checkpoint), and is sent when the server is back.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import RunStatus
from mlflow.entities.lifecycle_stage import LifecycleStage
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.utils.validation import (
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VAL_LENGTH,
    MAX_TAG_VAL_LENGTH,
)

from gatelab.tracking.runs.in_flight import InFlight
from gatelab.tracking.runs.outbox import MAX_BUFFERED_METRICS, Outbox, batch_ops, merged
from gatelab.tracking.runs.run_writer import RunWriter, ServerAway
from gatelab.tracking.store import experiment_artifact_location
from gatelab.trainer.config.outcome import Status
from gatelab.trainer.config.run_tags import ERROR_LENGTH, ERROR_TAG, PARENT_RUN_TAG, STATUS_TAG

# gatelab status -> MLflow run status. Divergence is a result (docs/design.md), so the run itself FINISHED.
# A preempted run is KILLED in MLflow's terms until a retry or `gatelab resume` reopens it.
_TERMINAL = {
    Status.FINISHED: "FINISHED",
    Status.DIVERGED: "FINISHED",
    Status.FAILED: "FAILED",
    Status.KILLED: "KILLED",
    Status.PREEMPTED: "KILLED",
}
STATUSES = (Status.RUNNING, *_TERMINAL)  # what a run's gatelab.status may hold (BUSY is never stored)

_log = logging.getLogger(__name__)
# How long an ending trial waits for an absent server before leaving the rest in its journal: a driver restarts
# its own server within seconds (tracking/server/watch.py); GATELAB_SERVER_WAIT_S sets it (a remote server's
# planned downtime may call for longer).
SERVER_WAIT_ENV = "GATELAB_SERVER_WAIT_S"


def server_wait_s() -> float:
    return float(os.environ.get(SERVER_WAIT_ENV, "60"))


AWAY_RETRY_S = 2.0  # how often a tracker tries an absent server again

# Ending a run makes MLflow print "View run ... at" and fetch the run once more just to build that link; with
# many trials per grid the lines bury gatelab's own progress and the fetch is a wasted request per trial.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


class ParamConflictError(ValueError):
    """A param was logged again with a different value; MLflow params are immutable."""


def truncate_value(value: Any, limit: int) -> str:
    """`str(value)`, cut to `limit` characters with a note saying how much was dropped."""
    text = str(value)
    if len(text) <= limit:
        return text
    note = f"...[gatelab: truncated {len(text)} chars to {limit}]"
    return text[: limit - len(note)] + note


def get_or_create_experiment(client: MlflowClient, name: str) -> str:
    """Id of experiment `name`, created with the proxied artifact location if missing. Tolerates another
    process creating it at the same moment; refuses a deleted one (restore it with `mlflow experiments restore`)."""
    for _ in range(2):
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            if experiment.lifecycle_stage == LifecycleStage.DELETED:
                raise MlflowException(
                    f"MLflow experiment {name!r} (id {experiment.experiment_id}) is deleted; restore it with "
                    f"`mlflow experiments restore --experiment-id {experiment.experiment_id}` or pick another name"
                )
            return experiment.experiment_id
        try:
            return client.create_experiment(name, artifact_location=experiment_artifact_location(name))
        except MlflowException as error:
            if error.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
            # Lost the race with another process: read its experiment on the next pass.
    raise MlflowException(f"MLflow experiment {name!r} neither exists nor could be created")


class MlflowTracker:
    """One MLflow run seen through the `Tracker` protocol. Build with `create(...)` or `resume(...)`.

    Everything logged goes through the run's outbox (tracking/runs/outbox.py) and is sent in order; when the server is
    away, training goes on and the outbox is kept in `journal` (if given) at every flush, so nothing is lost."""

    def __init__(
        self,
        client: MlflowClient,
        run_id: str,
        *,
        flush_every: int = MAX_METRICS_PER_BATCH,
        flush_interval_s: float = 5.0,
        asynchronous: bool = True,
        run: Any = None,
        journal: Path | None = None,
        final_wait_s: float | None = None,
        max_buffered_metrics: int = MAX_BUFFERED_METRICS,
        in_flight: InFlight | None = None,
    ) -> None:
        """Wrap an existing run. `flush_every`: buffered metrics that trigger a send; `flush_interval_s`: the
        longest a metric waits; `asynchronous`: send from a background thread (flush() still blocks);
        `run`: the run as just created (saves fetching it; the tracker then knows every metric the run holds);
        `journal`: where unsent operations are kept while the server is away (the trial folder's journal,
        trainer/config/trial_folder.py); `final_wait_s`: how long closing waits for an absent server before
        leaving the rest in the journal (default: server_wait_s()); `max_buffered_metrics`: the outbox's bound,
        beyond which logging waits for the server; `in_flight`: the trial folder's note of each request as it
        leaves (tracking/runs/in_flight.py), for the attempt that follows if this process dies."""
        self.client = client
        self.run_id = run_id
        # A run this tracker created holds only what it logs, so last_steps() can answer without a request.
        self._own_steps: dict[str, int] | None = {} if run is not None else None
        run = run if run is not None else client.get_run(run_id)
        if run.info.lifecycle_stage == LifecycleStage.DELETED:
            raise MlflowException(f"MLflow run {run_id} is deleted")
        self.experiment_id: str = run.info.experiment_id
        self.artifact_uri: str = run.info.artifact_uri
        self._params: dict[str, str] = dict(run.data.params)
        self._status = run.data.tags.get(STATUS_TAG) if run.info.status == "RUNNING" else None
        self._flush_every = max(1, flush_every)
        self._flush_interval_s = flush_interval_s
        self._final_wait_s = server_wait_s() if final_wait_s is None else final_wait_s
        self._outbox = Outbox(run_id, journal, max_buffered_metrics)
        self._writer = RunWriter(client, run_id, self.artifact_uri)
        self._in_flight = in_flight or InFlight(None)
        self._unsent_metrics = 0  # metrics logged since the last send was started
        self._last_send = time.monotonic()
        self._send_lock = threading.Lock()  # one sender at a time: keeps operations in order
        self._error: BaseException | None = None
        self._away_since: float | None = None  # when the server stopped answering, while it does not
        self._closed = False
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        if asynchronous:
            self._thread = threading.Thread(target=self._run_sender, name=f"mlflow-tracker-{run_id[:8]}", daemon=True)
            self._thread.start()

    @classmethod
    def create(
        cls,
        tracking_uri: str,
        experiment: str,
        *,
        run_name: str | None = None,
        parent_run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        experiment_id: str | None = None,
        **options: Any,
    ) -> MlflowTracker:
        """Start a new run in `experiment` (created if missing; `experiment_id` when the caller already knows
        it), optionally a child of `parent_run_id`, with `tags` and then `params` logged. `options` go to the
        constructor (flush_every, flush_interval_s, asynchronous, journal, ...)."""
        client = MlflowClient(tracking_uri=tracking_uri)
        experiment_id = experiment_id or get_or_create_experiment(client, experiment)
        run_tags = {key: truncate_value(value, MAX_TAG_VAL_LENGTH) for key, value in (tags or {}).items()}
        run_tags.setdefault(STATUS_TAG, Status.RUNNING.value)
        if parent_run_id is not None:
            run_tags[PARENT_RUN_TAG] = parent_run_id
        run = client.create_run(experiment_id, tags=run_tags, run_name=run_name)
        tracker = cls(client, run.info.run_id, run=run, **options)
        tracker.log_params(params or {})
        return tracker

    @classmethod
    def resume(cls, tracking_uri: str, run_id: str, **options: Any) -> MlflowTracker:
        """Reopen run `run_id` to continue logging: its MLflow status and `gatelab.status` become running."""
        client = MlflowClient(tracking_uri=tracking_uri)
        tracker = cls(client, run_id, **options)
        client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
        client.set_tag(run_id, STATUS_TAG, Status.RUNNING.value)
        tracker._status = Status.RUNNING
        return tracker

    # -- Tracker protocol -------------------------------------------------------------------------------

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params; a key already stored with the same value is skipped, a different value raises
        ParamConflictError. Values over 6000 characters are truncated with a note (compared truncated)."""
        new: list[tuple[str, str]] = []
        for key, value in params.items():
            text = truncate_value(value, MAX_PARAM_VAL_LENGTH)
            if text != str(value):
                _log.warning("param %r is %d characters; truncated to %d", key, len(str(value)), MAX_PARAM_VAL_LENGTH)
            if key in self._params:
                if self._params[key] != text:
                    raise ParamConflictError(
                        f"param {key!r} of run {self.run_id} is already {self._params[key]!r}, not {text!r}; "
                        "params are immutable: put changing facts in tags or metrics, or start a new run"
                    )
                continue
            new.append((key, text))
        self._add_all(batch_ops(params=new))
        self._params.update(new)
        if new:
            self._send_now()

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set (overwrite) tags; values over 8000 characters are truncated with a note."""
        run_tags = [(key, truncate_value(value, MAX_TAG_VAL_LENGTH)) for key, value in tags.items()]
        self._add_all(batch_ops(tags=run_tags))
        if run_tags:
            self._send_now()

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Buffer scalar metrics at `step` (NaN is kept: divergence is a result; MLflow stores +-inf as
        +-1.8e308). Sent when `flush_every` are buffered, every `flush_interval_s`, or on flush()."""
        self._raise_pending()
        timestamp = int(time.time() * 1000)
        batch = [(key, float(value), timestamp, int(step)) for key, value in metrics.items()]
        if not batch:
            return
        if self._own_steps is not None:
            for key, _, _, at in batch:
                self._own_steps[key] = max(at, self._own_steps.get(key, at))
        self._add_all(batch_ops(metrics=batch))  # one call's metrics travel together
        self._unsent_metrics += len(batch)
        if self._outbox.full():
            self._wait_for_room()
        due = self._unsent_metrics >= self._flush_every or time.monotonic() - self._last_send >= self._flush_interval_s
        if due:
            if self._thread is not None:
                self._wake.set()
            else:
                self.flush()

    def log_artifact(self, local_path: Path, artifact_dir: str | None = None) -> None:
        """Upload a file (or a directory's files) into the run's artifacts under `artifact_dir`. The file must
        stay where it is until sent (the trial directory's files do)."""
        self._check_artifact_access()
        self._add({"op": "artifact", "path": str(Path(local_path).absolute()), "dir": artifact_dir})
        self._send_now()

    def last_steps(self) -> dict[str, int]:
        """Largest logged step per metric key, after flushing the buffer (empty for a fresh run). One request:
        MLflow keeps, per key, the latest metric as the entry with the largest step."""
        if self._own_steps is not None:
            return dict(self._own_steps)
        self._drain(self._final_wait_s, keep=False)
        latest = self.client.get_run(self.run_id).data.to_proto().metrics
        return {metric.key: metric.step for metric in latest}

    def last_step(self) -> int | None:
        """Largest step over all metric keys, or None if nothing was logged."""
        return max(self.last_steps().values(), default=None)

    def set_status(self, status: str) -> None:
        """Set `gatelab.status`; a terminal status also ends the MLflow run (finished/diverged -> FINISHED,
        failed -> FAILED, killed and preempted -> KILLED) and closes the tracker: what the server has not
        confirmed within `final_wait_s` stays in the journal."""
        if status not in STATUSES:
            raise ValueError(f"unknown gatelab status {status!r}; expected one of {', '.join(STATUSES)}")
        self._raise_pending()
        if status == self._status == Status.RUNNING:
            return  # already so, in MLflow and in the tag: three requests saved per trial start
        self._add_all(batch_ops(tags=[(STATUS_TAG, status)]))
        self._status = status
        if status in _TERMINAL:
            self._add({"op": "status", "status": _TERMINAL[status], "end_time": int(time.time() * 1000)})
            self.close()  # an ended run takes no more metrics; artifacts may still be added
        else:
            self._add({"op": "status", "status": RunStatus.to_string(RunStatus.RUNNING), "end_time": None})
            self._send_now()

    def fail(self, error: str) -> None:
        """Record the trial failed, the one way: why (ERROR_TAG, its first ERROR_LENGTH characters), then the status
        `failed`, which ends the run."""
        self.set_tags({ERROR_TAG: error[:ERROR_LENGTH]})
        self.set_status(Status.FAILED)

    def flush(self) -> None:
        """Send everything logged so far. While the server is away it is kept in the journal instead (durable
        before a checkpoint); without a journal that raises. Re-raises a failure of the background sender."""
        self._raise_pending()
        self._drain(0.0, keep=True)
        self._raise_pending()

    # -- extras ---------------------------------------------------------------------------------------------

    def log_text(self, text: str, artifact_file: str) -> None:
        """Store `text` as the artifact `artifact_file` (e.g. "config/resolved.yaml")."""
        self._check_artifact_access()
        self.client.log_text(self.run_id, text, artifact_file)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        """Store a matplotlib figure as the artifact `artifact_file` (format from its suffix, e.g. .png)."""
        self._check_artifact_access()
        self.client.log_figure(self.run_id, figure, artifact_file)

    def close(self) -> None:
        """Send what is left (waiting up to `final_wait_s` for an absent server, then keeping the rest in the
        journal) and stop the background sender; the run's status is left as it is."""
        if self._closed:
            return
        self._closed = True
        try:
            self._drain(self._final_wait_s, keep=True)
        finally:
            self._wake.set()
            if self._thread is not None:
                self._thread.join(timeout=30)
        self._raise_pending()

    def __enter__(self) -> MlflowTracker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------------------------

    def _add(self, op: dict) -> None:
        if self._closed and op["op"] != "artifact":
            raise RuntimeError(f"MlflowTracker for run {self.run_id} is closed")
        self._outbox.add(op)

    def _add_all(self, ops: list[dict]) -> None:
        for op in ops:
            self._add(op)

    def _run_sender(self) -> None:
        while not self._closed:
            wait = self._flush_interval_s if self._away_since is None else AWAY_RETRY_S
            self._wake.wait(timeout=wait)
            self._wake.clear()
            if self._closed:
                return
            try:
                self._send_pending()
            except ServerAway:
                pass

    def _send_now(self) -> None:
        """Send what is pending unless the server is away (then the sender thread keeps trying)."""
        if self._closed:  # no sender thread any more: an artifact added after the end waits here or is journaled
            self._drain(self._final_wait_s, keep=True)
            return
        if self._away_since is not None:
            self._wake.set()
            return
        try:
            self._send_pending()
        except ServerAway:
            self._wake.set()
        self._raise_pending()

    def _send_pending(self) -> None:
        """Send the outbox in order; ServerAway leaves the rest for later. An operation the server refuses is
        dropped and its error kept for the caller (the next call raises it)."""
        with self._send_lock:
            self._unsent_metrics = 0
            self._last_send = time.monotonic()
            for request, count in merged(self._outbox.pending()):
                try:
                    with self._in_flight.sending(self.run_id, request.get("metrics", [])):
                        self._writer.send(request)
                except ServerAway:
                    self._note_away()
                    raise
                except Exception as error:  # noqa: BLE001 - handed to the caller by _raise_pending
                    self._error = error  # and the refused operation is dropped with the sent ones
                self._outbox.confirm(count)
            self._note_back()

    def _drain(self, wait_s: float, *, keep: bool) -> None:
        """Send everything, trying for up to `wait_s` while the server is away; then keep the rest in the
        journal (`keep`) or raise."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self._send_pending()
                return
            except ServerAway as away:
                if time.monotonic() >= deadline:
                    if keep and self._outbox.save():
                        return
                    raise RuntimeError(
                        f"MLflow server at {self.client.tracking_uri} is away; {len(self._outbox)} operations of "
                        f"run {self.run_id} unsent"
                    ) from away
                time.sleep(min(AWAY_RETRY_S, max(0.0, deadline - time.monotonic())))

    def _wait_for_room(self) -> None:
        """The outbox is full: training waits here for the server (keeping the outbox in the journal)."""
        print(
            f"gatelab: {self._outbox.metrics} metrics of run {self.run_id} wait for the MLflow server; training "
            "waits for it too",
            file=sys.stderr,
            flush=True,
        )
        self._outbox.save()
        while self._outbox.full():
            try:
                self._send_pending()
            except ServerAway:
                time.sleep(AWAY_RETRY_S)

    def _note_away(self) -> None:
        if self._away_since is None:
            self._away_since = time.monotonic()
            print(
                f"gatelab: MLflow server at {self.client.tracking_uri} does not answer; run {self.run_id} keeps "
                "training and keeps its metrics until it is back",
                file=sys.stderr,
                flush=True,
            )

    def _note_back(self) -> None:
        if self._away_since is not None:
            away_s = time.monotonic() - self._away_since
            self._away_since = None
            print(
                f"gatelab: MLflow server back after {away_s:.0f} s; run {self.run_id} is up to date",
                file=sys.stderr,
                flush=True,
            )

    def _raise_pending(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise RuntimeError(f"MLflow refused an operation of run {self.run_id}") from error

    def _check_artifact_access(self) -> None:
        uri = self.client.tracking_uri
        if self.artifact_uri.startswith("mlflow-artifacts:") and not uri.startswith(("http://", "https://")):
            raise RuntimeError(
                f"run {self.run_id} keeps artifacts behind the MLflow server ({self.artifact_uri}), but this "
                f"tracker talks to {uri}; use the server's URI (tracking.local_server(store))"
            )
