"""`gatelab train CONFIG.yaml`: one trial in-process (no Ray), logged to MLflow, resumable by rerunning.

The same config and home find the same MLflow run through the trial key: a finished (or diverged) trial
prints its summary and does nothing; an unfinished one resumes from its newest checkpoint, continuing the
same run. torch is imported only when training actually starts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gatelab.grid.dispatch.failures import failure_reason
from gatelab.grid.spec.identity import trial_key
from gatelab.grid.spec.trial_file import load_trial_with_data
from gatelab.trainer.config.metric_names import (
    F_ATTN,
    FINAL_VAL_LOSS,
    FINAL_VAL_PPL,
    GATE_MEAN,
    M_ACT,
    MAX_SPIKE_RATIO,
    SINK_EPS,
    SPIKE_COUNT,
)
from gatelab.trainer.config.outcome import DiskFull, Status, TrialPreempted
from gatelab.trainer.config.trial import run_params
from gatelab.trainer.config.trial_folder import TrialFolder

TRAIN_EXPERIMENT = "gatelab-train"
SUMMARY_KEYS = (
    FINAL_VAL_PPL,
    FINAL_VAL_LOSS,
    SPIKE_COUNT,
    MAX_SPIKE_RATIO,
    F_ATTN,
    SINK_EPS,
    M_ACT,
    GATE_MEAN,
)


def print_summary(key: str, status: str, summary: dict) -> None:
    shown = "  ".join(f"{k}={summary[k]:.4g}" for k in SUMMARY_KEYS if k in summary)
    print(f"trial {key}: {status}  {shown}")


def cmd_train(args: argparse.Namespace) -> int:
    from gatelab.tracking import Store, local_server
    from gatelab.tracking.runs.ledger import TrialRun, open_trial_run
    from gatelab.tracking.server.watch import ServerWatch
    from gatelab.tracking.store import resolve_home

    # Bad config or bad data fails here, before a server or a run exists (the home's cache may be made: it holds
    # the tokenized data the trial reads).
    home = Store(resolve_home(args.home))
    home.check_folders()
    cache_dir = home.cache_dir
    config, fingerprint = load_trial_with_data(Path(args.config), args.set or [], cache_dir=cache_dir)
    key = trial_key(config, fingerprint)
    store = Store.open(args.home)
    trial_dir = store.checkpoints_dir / key
    with local_server(store) as uri, ServerWatch(store, uri):
        # The same ledger lookup as a grid's workers: reopen an unfinished run, skip a done one.
        trial = TrialRun(
            uri=uri, experiment=TRAIN_EXPERIMENT, key=key, run_name=f"{config.name}-{key}", params=run_params(config)
        )
        tracker, existing = open_trial_run(trial, TrialFolder(trial_dir).journal)
        if tracker is None:
            print(f"trial {key} is already {existing.status} (MLflow run {existing.run_id}); nothing to do")
            print_summary(key, existing.status, existing.metrics)
            return 0
        from gatelab.trainer.run import run_trial  # torch and Lightning: only now

        verb = "resuming" if existing else "starting"
        print(f"{verb} trial {key} (MLflow run {tracker.run_id})")
        try:
            result = run_trial(config, tracker, trial_dir, store.cache_dir, progress=True)
        except TrialPreempted as stop:  # SIGTERM or Ctrl-C: the step's checkpoint is saved, the run says so
            print(f"trial {key} {stop}; rerun the same command to resume from it", file=sys.stderr)
            return 143 if stop.signal_name == "SIGTERM" else 130  # 128 + the signal, as a shell reports it
        except DiskFull as full:  # the older checkpoints are intact: free space, rerun, and it resumes
            tracker.set_status(Status.FAILED)
            print(
                f"gatelab: error: trial {key}: {failure_reason(full)}; free space and rerun to resume", file=sys.stderr
            )
            return 1
        except Exception:
            tracker.set_status(Status.FAILED)
            raise
        finally:
            tracker.close()
    print_summary(key, result.status, result.summary)
    return 0
