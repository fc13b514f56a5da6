"""What a grid disturbed by chaos must still hold, checked against the same grid run undisturbed: every trial
finished, one MLflow run per trial key, every metric's history with each step of the undisturbed history once
and no other, and the same losses (training is deterministic on the CPU, and a resumed trial recomputes from
its checkpoint exactly: trainer/trial_callback.py)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from gatelab.tracking.runs.bulk_history import histories
from gatelab.tracking.runs.ledger import TrialRecord, trial_runs_by_key
from gatelab.trainer.config.metric_names import FINAL_VAL_LOSS, TRAIN_LOSS, VAL_LOSS
from gatelab.trainer.config.outcome import Status

LOSS_TOLERANCE = 1e-5  # absolute, on the CPU: the same float32 arithmetic in the same order
COMPARED_LOSSES = (TRAIN_LOSS, VAL_LOSS, FINAL_VAL_LOSS)  # compared at their last logged step


@dataclass(frozen=True)
class GridLedger:
    """What one home's MLflow holds of a grid: its trial runs by key, and the newest run's metric histories."""

    runs: dict[str, list[TrialRecord]]
    """Trial key -> its runs, oldest first."""
    history: dict[str, dict[str, list[tuple[int, float]]]]
    """Trial key -> metric -> [(step, value)] of the key's newest run, sorted by step (repeats kept)."""

    @classmethod
    def read(cls, uri: str, experiment: str) -> GridLedger:
        runs = trial_runs_by_key(uri, experiment)
        newest = {key: records[-1] for key, records in runs.items()}
        metrics = sorted({name for record in newest.values() for name in record.metrics})
        by_run = histories(uri, [record.run_id for record in newest.values()], metrics)
        history = {
            key: {name: points for name, points in by_run[record.run_id].items() if points}
            for key, record in newest.items()
        }
        return cls(runs, history)

    def retries(self) -> int:
        """Starts of a trial after its first, as the runs' attempt tags count them (a worker killed before it
        opened the trial's run leaves no count)."""
        return sum(record.attempt - 1 for records in self.runs.values() for record in records)


@dataclass
class Violations:
    """Everything that broke, each as data (empty lists: the soak held)."""

    lost: list[str] = field(default_factory=list)
    """Trial keys with no run, or whose newest run did not finish: "<key>: <status>"."""
    duplicated_runs: list[str] = field(default_factory=list)
    """Trial keys with more than one MLflow run."""
    duplicated_steps: list[tuple[str, str, int]] = field(default_factory=list)
    """(key, metric, step) logged more than once."""
    missing_steps: list[tuple[str, str, int]] = field(default_factory=list)
    """(key, metric, step) in the undisturbed history only."""
    extra_steps: list[tuple[str, str, int]] = field(default_factory=list)
    """(key, metric, step) in the disturbed history only."""
    loss_mismatches: list[tuple[str, str, float, float]] = field(default_factory=list)
    """(key, metric, disturbed, undisturbed) final values further apart than LOSS_TOLERANCE."""
    reference: list[str] = field(default_factory=list)
    """What is wrong with the undisturbed run itself (it must finish every trial, once)."""
    submits: list[str] = field(default_factory=list)
    """A `gatelab submit` (either run) that exited non-zero: "<run> submit exited <code>: <its output's tail>"."""

    def count(self) -> int:
        return sum(len(found) for found in self.__dict__.values())

    def lines(self, limit: int = 10) -> list[str]:
        """One line per kind of violation, with its first `limit` cases."""
        return [f"{name}: {len(found)}: {found[:limit]}" for name, found in self.__dict__.items() if found]


def _unfinished(ledger: GridLedger, keys: list[str]) -> list[str]:
    return [
        f"{key}: {ledger.runs[key][-1].status if key in ledger.runs else 'no run'}"
        for key in keys
        if key not in ledger.runs or ledger.runs[key][-1].status != Status.FINISHED
    ]


def _final(points: list[tuple[int, float]]) -> float | None:
    return points[-1][1] if points else None


def compare(disturbed: GridLedger, undisturbed: GridLedger, keys: list[str]) -> Violations:
    """The checks, for the grid's trial `keys`."""
    found = Violations(lost=_unfinished(disturbed, keys))
    found.reference = _unfinished(undisturbed, keys) + [
        f"{key}: {len(runs)} runs" for key, runs in undisturbed.runs.items() if len(runs) > 1
    ]
    found.duplicated_runs = [key for key, runs in disturbed.runs.items() if len(runs) > 1]
    for key in keys:
        got, want = disturbed.history.get(key, {}), undisturbed.history.get(key, {})
        for metric in sorted(set(got) | set(want)):
            counts = Counter(step for step, _ in got.get(metric, []))
            wanted = {step for step, _ in want.get(metric, [])}
            found.duplicated_steps += [(key, metric, step) for step, n in sorted(counts.items()) if n > 1]
            found.missing_steps += [(key, metric, step) for step in sorted(wanted - set(counts))]
            found.extra_steps += [(key, metric, step) for step in sorted(set(counts) - wanted)]
        for metric in COMPARED_LOSSES:
            mine, theirs = _final(got.get(metric, [])), _final(want.get(metric, []))
            if mine is None and theirs is None:
                continue
            if mine is None or theirs is None or abs(mine - theirs) > LOSS_TOLERANCE:
                found.loss_mismatches.append((key, metric, mine, theirs))
    return found


def largest_loss_difference(disturbed: GridLedger, undisturbed: GridLedger) -> float:
    """The largest |disturbed - undisturbed| over every key and every logged step of the compared losses."""
    largest = 0.0
    for key, got in disturbed.history.items():
        want = undisturbed.history.get(key, {})
        for metric in COMPARED_LOSSES:
            theirs = dict(want.get(metric, []))
            largest = max(
                [largest, *(abs(value - theirs[step]) for step, value in got.get(metric, []) if step in theirs)]
            )
    return largest
