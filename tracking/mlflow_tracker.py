"""`MlflowTracker`: the trainer's `Tracker` (trainer/tracker.py) backed by one MLflow run.

Each tracker owns an explicit `MlflowClient(tracking_uri)` rather than the fluent `mlflow.*` API, whose active
run and tracking URI are process globals: several trials in one process would clash.

Metrics are buffered and sent with `log_batch` (docs/libraries.md, MLflow: one request per batch, at most 1000
metrics and 100 params+tags per batch). The metrics of one `log_metrics` call always travel in the same batch
(unless it alone exceeds 1000), and batches are sent in order, so after a crash the stored history is a prefix
of what was logged: `last_steps()` never names a step whose metrics are half stored.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.entities.lifecycle_stage import LifecycleStage
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.utils.validation import (
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
    MAX_TAG_VAL_LENGTH,
)

from gatelab.tracking.store import experiment_artifact_location
from gatelab.trainer.config.outcome import Status

STATUS_TAG = "gatelab.status"
PARENT_RUN_TAG = "mlflow.parentRunId"
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
    """One MLflow run seen through the `Tracker` protocol. Build with `create(...)` or `resume(...)`."""

    def __init__(
        self,
        client: MlflowClient,
        run_id: str,
        *,
        flush_every: int = MAX_METRICS_PER_BATCH,
        flush_interval_s: float = 5.0,
        asynchronous: bool = True,
        run: Any = None,
    ) -> None:
        """Wrap an existing run. `flush_every`: buffered metrics that trigger a send; `flush_interval_s`: the
        longest a metric waits; `asynchronous`: send from a background thread (flush() still blocks);
        `run`: the run as just created (saves fetching it; the tracker then knows every metric the run holds)."""
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
        self._buffer: list[list[Metric]] = []  # one entry per log_metrics call
        self._buffered = 0
        self._last_send = time.monotonic()
        self._buffer_lock = threading.Lock()
        self._send_lock = threading.Lock()  # held while a batch is taken and sent: keeps batches in order
        self._error: BaseException | None = None
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
        constructor (flush_every, flush_interval_s, asynchronous)."""
        client = MlflowClient(tracking_uri=tracking_uri)
        experiment_id = experiment_id or get_or_create_experiment(client, experiment)
        run_tags = {key: truncate_value(value, MAX_TAG_VAL_LENGTH) for key, value in (tags or {}).items()}
        run_tags.setdefault(STATUS_TAG, "running")
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
        client.set_tag(run_id, STATUS_TAG, "running")
        tracker._status = "running"
        return tracker

    # -- Tracker protocol -------------------------------------------------------------------------------

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params; a key already stored with the same value is skipped, a different value raises
        ParamConflictError. Values over 6000 characters are truncated with a note (compared truncated)."""
        new: list[Param] = []
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
            new.append(Param(key, text))
        for chunk in _chunks(new, MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, params=chunk)
            self._params.update({param.key: param.value for param in chunk})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set (overwrite) tags; values over 8000 characters are truncated with a note."""
        run_tags = [RunTag(key, truncate_value(value, MAX_TAG_VAL_LENGTH)) for key, value in tags.items()]
        for chunk in _chunks(run_tags, MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, tags=chunk)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Buffer scalar metrics at `step` (NaN is kept: divergence is a result; MLflow stores +-inf as
        +-1.8e308). Sent when `flush_every` are buffered, every `flush_interval_s`, or on flush()."""
        self._raise_pending()
        if self._closed:
            raise RuntimeError(f"MlflowTracker for run {self.run_id} is closed")
        timestamp = int(time.time() * 1000)
        batch = [Metric(key, float(value), timestamp, int(step)) for key, value in metrics.items()]
        if not batch:
            return
        if self._own_steps is not None:
            for metric in batch:
                self._own_steps[metric.key] = max(metric.step, self._own_steps.get(metric.key, metric.step))
        with self._buffer_lock:
            self._buffer.append(batch)
            self._buffered += len(batch)
            due = self._buffered >= self._flush_every or time.monotonic() - self._last_send >= self._flush_interval_s
        if due:
            if self._thread is not None:
                self._wake.set()
            else:
                self._send_buffered()
                self._raise_pending()

    def log_artifact(self, local_path: Path, artifact_dir: str | None = None) -> None:
        """Upload a file (or a directory's files) into the run's artifacts under `artifact_dir`."""
        self._check_artifact_access()
        self.client.log_artifact(self.run_id, str(local_path), artifact_dir)

    def last_steps(self) -> dict[str, int]:
        """Largest logged step per metric key, after flushing the buffer (empty for a fresh run). One request:
        MLflow keeps, per key, the latest metric as the entry with the largest step."""
        self.flush()
        if self._own_steps is not None:
            return dict(self._own_steps)
        latest = self.client.get_run(self.run_id).data.to_proto().metrics
        return {metric.key: metric.step for metric in latest}

    def last_step(self) -> int | None:
        """Largest step over all metric keys, or None if nothing was logged."""
        return max(self.last_steps().values(), default=None)

    def set_status(self, status: str) -> None:
        """Set `gatelab.status`; a terminal status also flushes, ends the MLflow run (finished/diverged ->
        FINISHED, failed -> FAILED, killed -> KILLED) and closes the tracker for metrics."""
        if status not in STATUSES:
            raise ValueError(f"unknown gatelab status {status!r}; expected one of {', '.join(STATUSES)}")
        self.flush()
        if status == self._status == Status.RUNNING:
            return  # already so, in MLflow and in the tag: three requests saved per trial start
        self.client.set_tag(self.run_id, STATUS_TAG, status)
        self._status = status
        if status in _TERMINAL:
            self.client.set_terminated(self.run_id, status=_TERMINAL[status])
            self.close()  # an ended run takes no more metrics; artifacts may still be added
        else:
            self.client.update_run(self.run_id, status=RunStatus.to_string(RunStatus.RUNNING))

    def flush(self) -> None:
        """Block until every metric logged so far is stored; re-raise a failure of the background sender."""
        self._send_buffered()
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
        """Flush and stop the background sender; the run's status is left as it is."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            self._wake.set()
            if self._thread is not None:
                self._thread.join(timeout=30)

    def __enter__(self) -> MlflowTracker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------------------------

    def _run_sender(self) -> None:
        while not self._closed:
            self._wake.wait(timeout=self._flush_interval_s)
            self._wake.clear()
            self._send_buffered()

    def _send_buffered(self) -> None:
        """Send everything buffered now, in order. A failed batch and the rest go back to the buffer's front
        and the error is kept for the caller (the client has already retried the request)."""
        with self._send_lock:
            with self._buffer_lock:
                pending, self._buffer, self._buffered = self._buffer, [], 0
                self._last_send = time.monotonic()
            batches = list(_pack(pending, MAX_METRICS_PER_BATCH))
            for index, batch in enumerate(batches):
                try:
                    self.client.log_batch(self.run_id, metrics=batch)
                except Exception as error:  # noqa: BLE001 - handed to the caller by _raise_pending
                    unsent = [metric for rest in batches[index:] for metric in rest]
                    with self._buffer_lock:
                        self._buffer.insert(0, unsent)
                        self._buffered += len(unsent)
                    self._error = error
                    return

    def _raise_pending(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise RuntimeError(f"sending metrics of MLflow run {self.run_id} failed; they stay buffered") from error

    def _check_artifact_access(self) -> None:
        uri = self.client.tracking_uri
        if self.artifact_uri.startswith("mlflow-artifacts:") and not uri.startswith(("http://", "https://")):
            raise RuntimeError(
                f"run {self.run_id} keeps artifacts behind the MLflow server ({self.artifact_uri}), but this "
                f"tracker talks to {uri}; use the server's URI (tracking.local_server(store))"
            )


def _chunks(items: Sequence[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _pack(calls: list[list[Metric]], limit: int) -> Iterable[list[Metric]]:
    """Group whole log_metrics calls into batches of at most `limit` metrics (a call over `limit` is split)."""
    batch: list[Metric] = []
    for call in calls:
        for chunk in _chunks(call, limit):
            if len(batch) + len(chunk) > limit:
                yield batch
                batch = []
            batch.extend(chunk)
    if batch:
        yield batch
