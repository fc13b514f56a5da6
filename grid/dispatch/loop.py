"""The one loop that runs a grid's trials on Ray, for every driver.

A driver (a chooser) only decides which trials run next: a fixed list (`gatelab submit`), Optuna's asks (a `search:`
grid), the sequential seed plan (a `seeds:` grid, grid/dispatch/adaptive.py). This loop sends what the chooser
queued, at most `cap` at a time, waits for results, turns a task Ray lost (killed for memory, retry budget spent)
into a recorded failure, hands each result back to the chooser, shows progress through one view for all (plain
lines, a live table or a notebook bar: grid/dispatch/progress.py), and on Ctrl-C stops what runs and says how to
resume. All state stays in MLflow and on storage, so a killed driver loses nothing."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gatelab.grid.dispatch.progress import PlainLines, ProgressView, RunningTrial, Snapshot
from gatelab.grid.dispatch.ray_jobs import trial_task
from gatelab.grid.dispatch.worker import TrialJob, record_unreported_failure
from gatelab.grid.spec.grid_spec import GridSpec
from gatelab.tracking.runs.catch_up import catch_up_trial
from gatelab.tracking.runs.ledger import trial_records
from gatelab.tracking.runs.ledger_database import trial_records_from_database
from gatelab.trainer.config.metric_names import STEP, TRAIN_LOSS
from gatelab.trainer.config.outcome import Status, TrialResult

POLL_S = 1.0  # how often the loop wakes (ray.wait's timeout), so pruning and progress stay responsive
CANCEL_WAIT_S = 60.0  # how long a cancelled task may take to let go
READS_PER_SHOW = 5  # a view is refreshed at most once per this many ledger reads' time (a big grid's read is ~1 s)


@dataclass
class Sent:
    """A job queued here or running on Ray."""

    job: TrialJob
    label: str = ""  # how progress and result lines name the trial
    not_before: float = 0.0  # a job offered again later (its trial was busy in another process)
    sent_at: float = 0.0  # perf_counter when it went to Ray

    def wall_s(self) -> float:
        return time.perf_counter() - self.sent_at


class Chooser(Protocol):
    """What a driver tells the loop."""

    def more(self, loop: DispatchLoop) -> bool:
        """Queue the next trial(s) with loop.enqueue; False when there is nothing more to run now."""

    def delivered(self, loop: DispatchLoop, sent: Sent, result: TrialResult) -> None:
        """A trial's result (a lost task arrives as FAILED with its error)."""

    def poll(self, loop: DispatchLoop) -> None:
        """Called after every wait: look at running trials (e.g. feed a pruner)."""

    def headline(self) -> str:
        """The driver's own counts, at the head of each progress line."""

    def interrupted(self, running: int) -> str:
        """What Ctrl-C leaves and how to continue."""


class DispatchLoop:
    def __init__(
        self,
        spec: GridSpec,
        tracking_uri: str,
        experiment: str,
        cap: int,
        out: Callable,
        progress_s: float,
        database: str | None = None,
        view: ProgressView | None = None,
    ):
        """`database`: the home's ledger database, which progress reads directly (ray_jobs.home_database; None:
        through MLflow at tracking_uri). `view`: where progress goes (None: plain lines through `out` every
        `progress_s` seconds)."""
        import ray

        self.ray, self.task, self.cap, self.out = ray, trial_task(spec), cap, out
        self.uri, self.experiment, self.database = tracking_uri, experiment, database
        self.view = view if view is not None else PlainLines(out, progress_s)
        self.queue: list[Sent] = []
        self.in_flight: dict = {}  # Ray object ref -> Sent
        self.results: dict[str, str] = {}  # trial key -> status of each result delivered here
        self._started, self._read_s = time.monotonic(), 0.0

    def enqueue(self, job: TrialJob, *, label: str = "", delay_s: float = 0.0) -> None:
        self.queue.append(Sent(job, label, not_before=time.monotonic() + delay_s))

    def has(self, key: str) -> bool:
        return any(s.job.key == key for s in (*self.queue, *self.in_flight.values()))

    def run(self, chooser: Chooser) -> None:
        last_progress = -float("inf")  # a line at the start
        try:
            while True:
                self._send()
                while len(self.in_flight) < self.cap and not self.queue and chooser.more(self):
                    self._send()
                if not self.in_flight and not self.queue:
                    return
                if self.in_flight:
                    done, _ = self.ray.wait(list(self.in_flight), num_returns=1, timeout=POLL_S)
                else:  # only jobs waiting for another process to let go of their trial
                    done = []
                    time.sleep(POLL_S)
                for ref in done:
                    sent = self.in_flight.pop(ref)
                    result = self._result(ref, sent.job)
                    self.results[sent.job.key] = result.status
                    chooser.delivered(self, sent, result)
                chooser.poll(self)
                if time.monotonic() - last_progress >= max(self.view.every_s, READS_PER_SHOW * self._read_s):
                    last_progress = time.monotonic()
                    self._progress(chooser)
        except KeyboardInterrupt:
            for ref in self.in_flight:
                self.ray.cancel(ref, force=True)
            self.out(f"interrupted: {chooser.interrupted(len(self.in_flight))}")
            raise

    def cancel(self, keys: list[str]) -> dict[str, TrialResult | None]:
        """Stop these trials: queued ones are dropped, running ones cancelled. Key -> its result where it
        finished before the cancel landed, else None."""
        stopped: dict[str, TrialResult | None] = {}
        for sent in [s for s in self.queue if s.job.key in keys]:
            self.queue.remove(sent)
            stopped[sent.job.key] = None
        refs = [ref for ref, sent in self.in_flight.items() if sent.job.key in keys]
        for ref in refs:
            self.ray.cancel(ref, force=True)
        if refs:
            self.ray.wait(refs, num_returns=len(refs), timeout=CANCEL_WAIT_S)
        for ref in refs:
            sent = self.in_flight.pop(ref)
            try:
                stopped[sent.job.key] = self.ray.get(ref, timeout=0)
            except Exception:  # noqa: BLE001 - cancelled (TaskCancelledError) or the worker died
                stopped[sent.job.key] = None
        return stopped

    def _send(self) -> None:
        now = time.monotonic()
        for sent in [s for s in self.queue if s.not_before <= now]:
            if len(self.in_flight) >= self.cap:
                return
            self.queue.remove(sent)
            sent.sent_at = time.perf_counter()
            self.in_flight[self.task.remote(sent.job)] = sent

    def _result(self, ref, job: TrialJob) -> TrialResult:
        try:
            result = self.ray.get(ref)
        except self.ray.exceptions.RayError as err:  # killed for memory, or the retry budget spent
            return TrialResult(key=job.key, status=Status.FAILED, error=record_unreported_failure(job, err))
        # One that ended while the server was away kept its last operations on disk: the ledger hears of them before
        # the chooser reads it.
        catch_up_trial(self.uri, Path(job.checkpoint_root) / job.key)
        return result

    def _progress(self, chooser: Chooser) -> None:
        read_at = time.perf_counter()
        try:
            records, unknown = (self._records() if self.in_flight else {}), None
        except Exception as error:  # noqa: BLE001 - progress never stops a grid (a busy or restarting server)
            records, unknown = {}, type(error).__name__
        self._read_s = time.perf_counter() - read_at
        running = []
        for sent in self.in_flight.values():
            record = records.get(sent.job.key)
            metrics = record.metrics if record else {}
            running.append(
                RunningTrial(
                    key=sent.job.key,
                    label=sent.label,
                    step=int(metrics.get(STEP, 0)),
                    max_steps=sent.job.config.schedule.max_steps,
                    loss=metrics.get(TRAIN_LOSS),
                    elapsed_s=sent.wall_s(),
                )
            )
        self.view.show(
            Snapshot(
                headline=chooser.headline(),
                running=tuple(running),
                queued=len(self.queue),
                results=dict(self.results),
                elapsed_s=time.monotonic() - self._started,
                unknown=unknown,
            )
        )

    def _records(self) -> dict:
        if self.database is not None:  # ~20 ms for 1,000 trials, and no load on the server (ledger_database.py)
            return trial_records_from_database(self.database, self.experiment)
        return trial_records(self.uri, self.experiment)
