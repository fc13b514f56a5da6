"""What the dispatch loop shows while a grid runs, behind one small interface: the loop (grid/dispatch/loop.py) reads
the ledger every so often and hands a `Snapshot` to a `ProgressView`. Three views, one loop:

- `PlainLines` (here): one line every 30 s, the format `gatelab submit` prints when piped, in CI and in tests;
- api/live_table.py: a live table on a terminal (rich);
- api/progress_bar.py: a progress bar in a notebook (tqdm.auto).

The grid's ETA comes from the dry run's cost estimate (grid/spec/trial_cost.py): the estimated FLOPs of the
trials still to train, over the rate at which this submit has trained the others' FLOPs so far."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

PROGRESS_PRINT_S = 30.0  # a plain progress line this often (and once at the start); each result has its own line


@dataclass(frozen=True, kw_only=True)
class RunningTrial:
    """One trial running on Ray, as the ledger last saw it."""

    key: str
    label: str
    step: int
    """The latest step it logged (0 before its first)."""
    max_steps: int
    loss: float | None
    """Its latest training loss."""
    elapsed_s: float
    """Since it was sent to Ray."""

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the pace so far; None before its first step."""
        if self.step <= 0:
            return None
        return self.elapsed_s * (self.max_steps - self.step) / self.step


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """The grid as the loop sees it at one moment."""

    headline: str
    """The driver's own counts (the chooser's `headline()`), as the plain line starts."""
    running: tuple[RunningTrial, ...]
    queued: int
    """Jobs queued in the loop, not yet sent to Ray."""
    results: Mapping[str, str]
    """Trial key -> status, for every result this submit has received."""
    elapsed_s: float
    """Since the loop started."""
    unknown: str | None = None
    """Why the running trials' steps are unknown now (the ledger could not be read: a busy or restarting server)."""


class ProgressView(Protocol):
    """Where a submit's progress goes. Its owner (api/api_submit.py) calls `start` before the loop and `close` once
    at the end; the loop calls `show` about every `every_s` seconds, and the driver `say` for each line it prints (a
    trial's result, the start and closing lines)."""

    every_s: float

    def start(self, grid: str, clock: GridClock, already_done: int) -> None: ...

    def say(self, line: str) -> None: ...

    def show(self, snapshot: Snapshot) -> None: ...

    def finish(self, snapshot: Snapshot) -> None:
        """The last state, once the loop has ended (every result in): a live view draws it, plain lines need not."""

    def close(self) -> None: ...


class PlainLines:
    """Today's plain lines: '[12:00:30] done 3/8 ... running 2 queued 0 | key@step/max ...'."""

    def __init__(self, out: Callable[[str], None] = print, every_s: float = PROGRESS_PRINT_S) -> None:
        self.out, self.every_s = out, every_s

    def start(self, grid: str, clock: GridClock, already_done: int) -> None:
        pass  # the driver's own start line says it

    def say(self, line: str) -> None:
        self.out(line)

    def show(self, snapshot: Snapshot) -> None:
        steps = " ".join(f"{t.key}@{t.step}/{t.max_steps}" for t in snapshot.running)
        if snapshot.unknown:
            steps = f"(steps unknown now: {snapshot.unknown})"
        self.out(
            f"[{time.strftime('%H:%M:%S')}] {snapshot.headline}  running {len(snapshot.running)}  "
            f"queued {snapshot.queued}  | " + steps
        )
        sys.stdout.flush()

    def finish(self, snapshot: Snapshot) -> None:
        pass  # each result and the closing lines are printed already

    def close(self) -> None:
        pass


class Silent:
    """No output at all (`gatelab.submit(grid, progress=False)`)."""

    every_s = PROGRESS_PRINT_S

    def start(self, grid: str, clock: GridClock, already_done: int) -> None:
        pass

    def say(self, line: str) -> None:
        pass

    def show(self, snapshot: Snapshot) -> None:
        pass

    def finish(self, snapshot: Snapshot) -> None:
        pass

    def close(self) -> None:
        pass


class GridClock:
    """The grid's ETA from the dry run's cost: each trial's estimated training FLOPs (`flops`, by key), trained at
    the rate this submit has shown so far (finished trials whole, running ones by their step)."""

    def __init__(self, flops: Mapping[str, float], to_run: set[str]) -> None:
        self.flops, self.to_run = dict(flops), set(to_run)

    def eta_s(self, snapshot: Snapshot) -> float | None:
        """Seconds until every trial of this submit has a result; None until something has trained."""
        done = sum(self.flops.get(key, 0.0) for key in snapshot.results if key in self.to_run)
        partial = sum(self.flops.get(t.key, 0.0) * t.step / max(t.max_steps, 1) for t in snapshot.running)
        trained = done + partial
        if trained <= 0 or snapshot.elapsed_s <= 0:
            return None
        left = sum(self.flops.get(key, 0.0) for key in self.to_run) - trained
        return max(left, 0.0) / (trained / snapshot.elapsed_s)


def format_duration(seconds: float | None) -> str:
    """'1h02m', '3m05s', '42s'; '?' when unknown."""
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
