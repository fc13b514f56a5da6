"""`gatelab bench report`: what reading a large grid's ledger costs a user, side by side in one run.

It builds, in a temporary home with its own MLflow server, a grid of N finished trials (10 variants x N/10
seeds of the tiny preset) as synthetic runs with gatelab's own tags, params, summary metrics and histories (a
train_loss point per logged step, val_loss per evaluation, a loss spike in one trial of ten), then times, each
as a user runs it (a fresh `gatelab` process): `status`, a resubmit that has nothing to do, and `report`.
Nothing trains; the runs carry no artifacts (a gated run's gate histogram rides on a tag, as a finished
trial's does).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from gatelab.grid.dispatch.ray_jobs import experiment_name, parent_tags, trial_tags
from gatelab.grid.spec.expand import Trial, expand
from gatelab.grid.spec.grid_file import load_grid
from gatelab.tracking import Store, ensure_server, stop_server
from gatelab.tracking.runs.ledger import TrialRun, ensure_parent_run, open_trial_run
from gatelab.trainer.config.metric_names import (
    F_ATTN,
    FINAL_VAL_LOSS,
    FINAL_VAL_PPL,
    GATE_HIST_BINS,
    M_ACT,
    SINK_EPS,
    SPIKE_COUNT,
    SPIKE_RATIO,
    STEP,
    TRAIN_LOSS,
    VAL_LOSS,
    VAL_PPL,
    per_layer,
)
from gatelab.trainer.config.outcome import Status
from gatelab.trainer.config.run_tags import GATE_HIST_TAG
from gatelab.trainer.config.trial import run_params, run_tags

VARIANTS = (
    "baseline",
    "g1_elementwise_sigmoid",
    "g1_headwise_sigmoid",
    "g2_elementwise_sigmoid",
    "g3_elementwise_sigmoid",
    "g4_elementwise_sigmoid",
    "g5_elementwise_sigmoid",
    "g1_elementwise_silu",
    "g1_input_independent",
    "g1_rmsnorm",
)
STEPS, LOG_EVERY, EVAL_EVERY = 60, 5, 30  # the smoke grid's cadence: 12 train points, 2 evaluations per trial
WRITERS = 8  # runs created at once while building the grid


def _grid_file(folder: Path, trials: int) -> Path:
    path = folder / "bench-report.yaml"
    grid = {
        "name": "bench-report",
        "base": {
            "model": {"preset": "tiny"},
            "schedule": {"max_steps": STEPS, "batch_size": 8, "log_every": LOG_EVERY},
            "eval": {"every": EVAL_EVERY, "batches": 1, "long_context_factors": [1]},
        },
        "axes": {"variant": list(VARIANTS), "seed": list(range(max(1, trials // len(VARIANTS))))},
    }
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


def _finished_run(uri: str, experiment: str, parent: str, spec, trial: Trial) -> None:
    """One trial's run as a finished trial leaves it (no artifacts: the report reads on without them)."""
    tags = {**trial_tags(spec, trial.overrides), **run_tags(trial.config)}
    run = TrialRun(
        uri=uri,
        experiment=experiment,
        key=trial.key,
        run_name=f"{trial.label} [{trial.key}]",
        parent_run_id=parent,
        tags=tags,
        params=run_params(trial.config),
    )
    tracker, _ = open_trial_run(run)
    shift = 0.01 * (VARIANTS.index(trial.config.variant) + trial.config.seed % 7)
    for step in range(LOG_EVERY, STEPS + 1, LOG_EVERY):
        metrics = {TRAIN_LOSS: 5.0 * math.exp(-step / 40) + 1 + shift, STEP: float(step)}
        if step == STEPS // 2 and trial.config.seed % 10 == 0:  # a loss spike in one trial of ten
            metrics[SPIKE_RATIO] = 3.0
        if step % EVAL_EVERY == 0:
            metrics |= {VAL_LOSS: 5.2 * math.exp(-step / 40) + 1 + shift}
            metrics[VAL_PPL] = math.exp(metrics[VAL_LOSS])
        tracker.log_metrics(metrics, step)
    final = 5.2 * math.exp(-STEPS / 40) + 1 + shift
    summary = {FINAL_VAL_LOSS: final, FINAL_VAL_PPL: math.exp(final), SPIKE_COUNT: 0.0, F_ATTN: 0.05}
    summary |= {M_ACT: 20.0, SINK_EPS: 0.1, per_layer(F_ATTN, 0): 0.1, per_layer(F_ATTN, 1): 0.02}
    tracker.log_metrics(summary, STEPS)
    if trial.config.variant_definition().is_gated:  # as a finished gated trial's run carries them
        tracker.set_tags({GATE_HIST_TAG: json.dumps([5] * GATE_HIST_BINS + [0, 0])})
    tracker.set_status(Status.FINISHED)


def timed_gatelab(*args: str) -> float:
    """Seconds a `gatelab` command takes as a user runs it: a fresh process."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gatelab.grid.cli", *args], check=True, capture_output=True, text=True)
    return time.perf_counter() - started


def bench_report(trials: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="gatelab-bench-report-") as tmp:
        folder = Path(tmp)
        store = Store.open(str(folder / "home"))
        info, _ = ensure_server(store)
        try:
            grid = _grid_file(folder, trials)
            spec = load_grid(grid)
            grid_trials = expand(spec)
            experiment = experiment_name(spec)
            parent = ensure_parent_run(info.uri, experiment, spec.name, parent_tags(spec), store.locks_dir)
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=WRITERS) as pool:
                list(pool.map(lambda t: _finished_run(info.uri, experiment, parent, spec, t), grid_trials))
            build_s = time.perf_counter() - started
            home = ["--home", str(store.home)]
            times = {
                "status": timed_gatelab("status", str(grid), *home),
                "resubmit": timed_gatelab("submit", str(grid), *home),
                "report": timed_gatelab("report", str(grid), *home, "--out", str(folder / "report")),
            }
        finally:
            stop_server(store)
    return {"trials": len(grid_trials), "build_s": build_s, "seconds": times, "report_target_s": 10.0}
