"""`gatelab bench grid`: how much of the machine a grid actually trains with.

- efficiency = sum of trial compute time / (concurrent slots x wall time of the whole submit, Ray's start
  included; the MLflow server is already up, as for every submit after a home's first), where a trial's
  compute is its training loop and final evaluation (fit minus checkpoint writes, plus finish); also
  reported without Ray's start, as when a submit joins a running Ray;
- per-trial overhead = driver-seen wall time (dispatch to result) minus compute: Ray dispatch, worker
  start, MLflow run set-up and logging, checkpoint writes;
- where the rest of the slot-time went (`lost`, fractions of slots x wall that sum to 1 - efficiency):
  Ray's start, the workers' one-time imports, the other per-trial overhead, and idle slots (before the first
  dispatch, between a result and the next dispatch, and the tail when no trial is left to start);
- the time to load, validate, expand and hash a 10,000-trial grid.
All measured in one run on the smoke grid (or --grid) in a fresh temporary home.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from gatelab.grid.dispatch.local_ray import init_local_ray
from gatelab.grid.dispatch.ray_jobs import NO_OOM_RETRIES
from gatelab.grid.dispatch.submit import submit
from gatelab.grid.spec.expand import expand
from gatelab.grid.spec.grid_file import load_grid
from gatelab.tracking import Store, ensure_server, stop_server
from gatelab.trainer.config.outcome import Status
from gatelab.trainer.config.shipped_data import ABLATIONS_DIR

SMOKE = ABLATIONS_DIR / "smoke.yaml"


def expansion_seconds(grid: Path, n_trials: int = 10_000) -> tuple[float, int]:
    started = time.perf_counter()
    trials = expand(load_grid(grid, [f"axes.seed={list(range(n_trials))}", "axes.variant=[baseline]"]))
    return time.perf_counter() - started, len(trials)


def bench_grid(grid: Path = SMOKE, slots: int = 2) -> dict:
    import ray

    expand_s, expanded = expansion_seconds(grid)
    spec = load_grid(grid, [f"ray.max_concurrent={slots}"])
    trials = expand(spec)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(tmp)
        info, _ = ensure_server(store)
        try:
            started = time.perf_counter()
            init_local_ray(
                num_cpus=slots * spec.resources.cpus, include_dashboard=False, _system_config=dict(NO_OOM_RETRIES)
            )
            ray_start = time.perf_counter() - started
            outcome = submit(spec, trials, store, info.uri, retry_failed=False, out=lambda *_: None)
            wall = time.perf_counter() - started
        finally:
            ray.shutdown()
            stop_server(store)
    compute = {k: t["fit_s"] - t["checkpoint_s"] + t["finish_s"] for k, t in outcome.timings.items() if "fit_s" in t}
    overhead = [outcome.timings[k]["wall_s"] - c for k, c in compute.items()]
    total = sum(compute.values())
    imports = sum(outcome.timings[k]["import_s"] for k in compute)
    slot_s = slots * wall
    lost = {
        "ray_start": slots * ray_start / slot_s,
        "worker_imports": imports / slot_s,
        "other_trial_overhead": (sum(overhead) - imports) / slot_s,
    }
    lost["idle_slots"] = 1 - total / slot_s - sum(lost.values())
    return {
        "grid": str(grid),
        "trials": len(trials),
        "finished": sum(s == Status.FINISHED for s in outcome.statuses.values()),
        "slots": slots,
        "wall_s": wall,
        "compute_s": total,
        "efficiency": total / (slots * wall),
        # The same with Ray already running (a cluster, or `ray start` before submitting): Ray's own start
        # is a fixed cost per submit that gatelab does not control.
        "ray_start_s": ray_start,
        "efficiency_ray_running": total / (slots * (wall - ray_start)),
        "overhead_s": statistics.median(overhead),
        "overhead_max_s": max(overhead),
        "lost": lost,
        "expand_10k_s": expand_s,
        "expand_10k_trials": expanded,
    }
