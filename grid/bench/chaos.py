"""The chaos of `gatelab bench chaos`: at random moments, signal a random Ray worker that is running one of a
driver's trials, as a crashed process, a preempted spot instance or an operator's `kill` would.

The choices (how long to wait before each signal, which worker, which signal) come from one seeded RNG, so a
soak is reproducible in what it decides; when each signal lands against the trials' progress depends on the
machine's speed and load.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gatelab.grid.dispatch.worker import run_grid_trial
from gatelab.trainer.config.trial_folder import LOCK

# Ray renames a worker process after the task it runs (its cmdline), and back to `ray::IDLE` after.
TRIAL_TASK_TITLE = f"ray::{run_grid_trial.__name__}".encode()
TORCH_LIBRARY = b"libtorch_cpu.so"  # mapped once `import torch` has run, CUDA build or not
SLIDE_S = 0.2  # how often to look again when no worker qualifies at a drawn moment


def _parent(pid: int) -> int:
    # /proc/<pid>/stat: "pid (comm) state ppid ..."; comm may hold spaces and parentheses, so split after the last ")"
    return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])


def trial_workers(driver_pid: int) -> list[int]:
    """PIDs, ascending, of the Ray workers that run a trial now under the driver process `driver_pid` (its local
    Ray's workers descend from it), so other drivers' Ray clusters on the same machine are never touched."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if not (entry.name.isdigit() and TRIAL_TASK_TITLE in (entry / "cmdline").read_bytes()):
                continue
            pid = int(entry.name)
            while pid > 1 and pid != driver_pid:
                pid = _parent(pid)
            if pid == driver_pid:
                pids.append(int(entry.name))
        except (OSError, ValueError, IndexError):  # the process ended while being looked at
            continue
    return sorted(pids)


def trial_key_of(worker_pid: int) -> str | None:
    """The key of the trial a worker runs: the worker holds the trial's lock file, <checkpoint root>/<key>/.lock
    (trainer/config/trial_folder.py LOCK), open while it runs it."""
    try:
        for fd in (Path("/proc") / str(worker_pid) / "fd").iterdir():
            target = Path(os.readlink(fd))
            if target.name == LOCK:
                return target.parent.name
    except OSError:  # it ended while being looked at
        pass
    return None


def trainer_loaded(pid: int) -> bool:
    """Whether the process has torch's library mapped: a trial worker past its one-time imports (restoring its
    checkpoint, training or finishing), not still importing the trainer."""
    try:
        with (Path("/proc") / str(pid) / "maps").open("rb") as maps:
            return any(TORCH_LIBRARY in line for line in maps)
    except OSError:  # it ended while being looked at
        return False


@dataclass(frozen=True)
class Kill:
    """One signal sent."""

    at_s: float
    """Seconds after the chaos started."""
    pid: int
    """The trial worker signalled."""
    signal: str
    """SIGKILL or SIGTERM."""
    key: str
    """The trial it ran."""
    step: int | None
    """The trial's latest stored step then (None: nothing stored yet; a retry shows its earlier attempts')."""
    training: bool
    """Whether the worker was past its imports (trainer_loaded), not still setting up."""


@dataclass
class Chaos:
    """A thread that, until `kills` signals are sent or the driver ends, waits a random gap, then signals one
    random worker of the driver that runs a trial (holds its lock; with probability `training_share`, one past its
    imports): SIGKILL, or with probability `sigterm_share` SIGTERM (which the trainer turns into a
    checkpoint of the step it is on, then the worker exits; trainer/preemption.py). Where no worker qualifies
    at the drawn moment, it signals the first one that does."""

    driver_pid: int
    step_of: Callable[[str], int | None]
    """Trial key -> its latest stored step (None: nothing stored yet)."""
    kills: int
    seed: int
    gap_s: tuple[float, float] = (1.0, 6.0)
    """The wait before each signal, uniform in this range."""
    sigterm_share: float = 0.25
    training_share: float = 0.75
    """The share of moments that pick among workers past their imports (restoring, training, finishing), not any
    worker holding a trial (also opening the run, importing torch): a kill mid-training is what tests a resume
    from a checkpoint, and the stored step cannot tell (a retried trial shows its earlier attempts' steps while
    its fresh worker imports)."""
    is_training: Callable[[int], bool] = trainer_loaded
    """Worker PID -> whether it is past its imports."""
    sent: list[Kill] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gatelab-chaos", daemon=True)

    def start(self) -> Chaos:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def wait(self, timeout_s: float) -> list[Kill]:
        """Wait until every signal is sent or the driver ended (at most `timeout_s`); what was sent."""
        self._thread.join(timeout_s)
        return self.sent

    def stop(self) -> list[Kill]:
        """Stop sending and return what was sent."""
        self._stop.set()
        self._thread.join()
        return self.sent

    def _driver_alive(self) -> bool:
        try:
            os.kill(self.driver_pid, 0)
        except ProcessLookupError:
            return False
        # a driver that exited but was not yet reaped by its parent is a zombie: done all the same
        return (Path("/proc") / str(self.driver_pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"

    def _candidates(self, training_only: bool) -> list[tuple[int, str, bool]]:
        """(pid, trial key, past its imports) of each worker that holds a trial now (past its imports, if so
        asked). Only workers that hold a trial: one still importing before it has nothing to lose, and after
        each kill Ray's replacement worker imports for seconds, so signals sent at any worker would mostly land
        there."""
        running = [(pid, key) for pid in trial_workers(self.driver_pid) if (key := trial_key_of(pid))]
        found = [(pid, key, self.is_training(pid)) for pid, key in running]
        return [c for c in found if c[2]] if training_only else found

    def _run(self) -> None:
        while len(self.sent) < self.kills:
            # Drawn in a fixed order per moment, so the same seed makes the same choices.
            gap = self._rng.uniform(*self.gap_s)
            sig = signal.SIGTERM if self._rng.random() < self.sigterm_share else signal.SIGKILL
            training_only = self._rng.random() < self.training_share
            pick = self._rng.random()
            if self._stop.wait(gap):
                return
            # No worker qualifies at the drawn moment (Ray starting, every slot importing): the moment slides to
            # when one does, rather than waiting a whole new gap, so the kills asked for fit in the grid's time.
            while not (candidates := self._candidates(training_only)):
                if self._stop.wait(SLIDE_S) or not self._driver_alive():
                    return
            pid, key, training = candidates[int(pick * len(candidates))]
            step = self.step_of(key)
            try:
                os.kill(pid, sig)
            except ProcessLookupError:  # it finished its trial in between
                continue
            self.sent.append(Kill(time.monotonic() - self._started, pid, sig.name, key, step, training))
