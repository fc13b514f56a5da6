"""SIGTERM and Ctrl-C during training: checkpoint the step the trial is on, then stop.

Spot instances get a termination notice, and Ray, Kubernetes and `ray stop` send SIGTERM with a grace period.
Lightning's own SIGTERM notifier lets the step in flight finish and then raises SIGTERMException (a SystemExit
with status 0: a preempted trial would look like a clean exit); Ctrl-C arrives as KeyboardInterrupt, which
Lightning turns into SystemExit(1). Both pass through the callbacks' `on_exception`, where the trial's reporter
writes the checkpoint of that step (trainer/trial_callback.py). run_trial then records the trial `preempted`
and raises TrialPreempted, so a retry or `gatelab resume` loses at most the step in flight, not a checkpoint
interval.

A host process may have its own SIGTERM handler (a Ray worker exits at once on SIGTERM, mid-step). While a
trial trains, this one stands in for it: it only notes the signal, and Lightning (which calls every handler
that was installed when fit began) stops at the end of the step.
"""

from __future__ import annotations

import signal
import threading

from lightning.pytorch.utilities.exceptions import SIGTERMException


def signal_name(exception: BaseException) -> str | None:
    """SIGTERM or SIGINT when the exception is how Lightning reports one; None for anything else."""
    if isinstance(exception, SIGTERMException):
        return "SIGTERM"
    if isinstance(exception, KeyboardInterrupt):
        return "SIGINT"
    return None


class NoteSigterm:
    """While training: SIGTERM only noted (Lightning stops at the end of the step); the handler before it is
    restored afterwards. Signal handlers can be set only from the main thread: elsewhere a no-op."""

    def __enter__(self) -> NoteSigterm:
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._note)
        return self

    def _note(self, signum, frame) -> None:
        pass  # Lightning's notifier, called beside this one, sets trainer.received_sigterm

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
