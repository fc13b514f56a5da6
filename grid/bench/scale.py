"""`gatelab bench scale`: the grid loop at cluster scale, simulated on one machine.

A `ray.cluster_utils.Cluster` on loopback plays the cluster: a head (the driver's node, no GPUs) and `nodes` worker
nodes sharing `concurrent` logical GPUs. Trials are simulations (grid/bench/simulated_trial.py: no torch; the
trainer's metrics at a `small` trial's rate through the real tracker, checkpoints, resume) sent by the real driver
(`grid/dispatch/submit.py` submit, one GPU per trial) to the home's real MLflow server. Measured, for each level of
concurrency (a grid of two waves) and for one large grid:

- dispatch overhead per trial: the driver's wall time from sending a trial to its result, minus the simulation's
  own time (Ray's dispatch, a worker's start or reuse, the trial's lock, its MLflow run opened and closed);
- the ledger's lag: a trial's close lag (from the end of its last step until all it logged is stored);
- `gatelab status` while the grid runs (a fresh process each time), and after it: status and a no-op resubmit;
- the driver's memory (its resident set, sampled every second).
In the large grid one worker node is removed (its processes killed) once a quarter of the trials are done: Ray
retries its trials on the other nodes, and each must end `finished` in its one run, resumed from its checkpoint,
with every step's point stored exactly once (checked for every trial through MLflow's bulk history route).
"""

from __future__ import annotations

import math
import statistics
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import yaml

from gatelab.grid.bench.report import timed_gatelab
from gatelab.grid.bench.simulated_trial import SimulatedTrial
from gatelab.grid.dispatch.local_ray import LOOPBACK_NODE, loopback_cluster
from gatelab.grid.dispatch.ray_jobs import experiment_name
from gatelab.grid.dispatch.submit import submit
from gatelab.grid.spec.expand import expand
from gatelab.grid.spec.grid_file import load_grid
from gatelab.tracking.runs.ledger_database import trial_runs_from_database
from gatelab.tracking.store import Store
from gatelab.trainer.config.metric_names import STEP
from gatelab.trainer.config.outcome import Status

VARIANTS = ("baseline", "g1_elementwise_sigmoid", "g1_headwise_sigmoid", "g2_elementwise_sigmoid")
LOG_EVERY, EVAL_EVERY, CHECKPOINT_EVERY = 10, 50, 20  # a `small` trial logging every 10 steps (docs/cluster.md)
WORKER_MEMORY_MB = 135  # a Ray worker holding MLflow's client (measured: USS 131 MB), so 64 trials need ~8.6 GB
STATUS_EVERY_S = 20.0
REMOVE_AT = 0.25  # the fraction of the large grid done when a node is removed


@dataclass
class Level:
    """What one grid run measured."""

    concurrent: int
    trials: int
    slots: str = "GPU"
    wall_s: float = 0.0
    overhead_s: list[float] = field(default_factory=list)
    warm_overhead_s: list[float] = field(default_factory=list)  # without a fresh worker's one-time imports
    close_lag_s: list[float] = field(default_factory=list)
    status_s: list[float] = field(default_factory=list)
    driver_rss_mb: list[float] = field(default_factory=list)
    node_removed_at_s: float | None = None
    retried: int = 0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        def spread(values: list[float]) -> dict | None:
            if not values:
                return None
            ordered = sorted(values)
            nearest_rank_p90 = ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]
            return {"median": statistics.median(ordered), "p90": nearest_rank_p90, "max": ordered[-1]}

        return {
            "concurrent": self.concurrent,
            "trials": self.trials,
            "slots": self.slots,
            "wall_s": self.wall_s,
            "trials_per_min": 60 * self.trials / self.wall_s if self.wall_s else None,
            "dispatch_overhead_s": spread(self.overhead_s),
            "dispatch_overhead_warm_worker_s": spread(self.warm_overhead_s),
            "close_lag_s": spread(self.close_lag_s),
            "status_while_running_s": spread(self.status_s),
            "driver_rss_mb": {"start": self.driver_rss_mb[0], "peak": max(self.driver_rss_mb)}
            if self.driver_rss_mb
            else None,
            "node_removed_at_s": self.node_removed_at_s,
            "trials_retried": self.retried,
            "problems": self.problems,
        }


def grid_file(folder: Path, name: str, trials: int, concurrent: int, steps: int, gpu_slots: bool = True) -> Path:
    """A grid of `trials` simulated trials (variants x seeds), one logical GPU each (`gpu_slots`) or one CPU. Each
    grid's seeds are its own: two grids of one home with the same trial (its key) share its checkpoint folder, so
    the second would resume from the first's checkpoints."""
    seeds = -(-trials // len(VARIANTS))
    first_seed = zlib.crc32(name.encode()) % 10**6 * 10**4
    grid = {
        "name": name,
        "base": {
            "model": {"preset": "tiny"},
            "schedule": {"max_steps": steps, "batch_size": 8, "log_every": LOG_EVERY},
            "eval": {"every": EVAL_EVERY, "batches": 1, "long_context_factors": [1]},
            "checkpoint": {"every": CHECKPOINT_EVERY, "keep_last": 2},
        },
        "axes": {"variant": list(VARIANTS), "seed": list(range(first_seed, first_seed + seeds))},
        "resources": {"cpus": 1, "gpus": 1 if gpu_slots else 0},
        "ray": {"max_concurrent": concurrent, "max_retries": 3},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


def memory_needed_gb(concurrent: int) -> float:
    return concurrent * WORKER_MEMORY_MB / 1024


def fits_in_memory(concurrent: int) -> bool:
    """Whether this machine holds `concurrent` trial workers (one process each, as on a cluster) with 2 GB spare."""
    return memory_needed_gb(concurrent) + 2 <= psutil.virtual_memory().available / 2**30


class _Watch(threading.Thread):
    """Samples the driver's memory every second and times `gatelab status` every STATUS_EVERY_S while the grid
    runs; while `on_done` is set, it is called with the fraction of trials finished (read from the ledger's database
    in this, the driver's, process: only while a node is still to be removed, so the rest of the run measures the
    driver alone)."""

    def __init__(
        self, level: Level, grid: Path, store: Store, experiment: str, on_done: Callable[[float], None] | None
    ):
        super().__init__(daemon=True)
        self.level, self.grid, self.store, self.experiment, self.on_done = level, grid, store, experiment, on_done
        self.stop = threading.Event()

    def run(self) -> None:
        me, next_status = psutil.Process(), time.monotonic() + STATUS_EVERY_S
        while not self.stop.wait(1.0):
            self.level.driver_rss_mb.append(me.memory_info().rss / 2**20)
            if time.monotonic() >= next_status:
                self.level.status_s.append(timed_gatelab("status", str(self.grid), "--home", str(self.store.home)))
                next_status = time.monotonic() + STATUS_EVERY_S
            if self.on_done is None:
                continue
            try:
                runs = trial_runs_from_database(self.store.tracking_uri, self.experiment)
            except Exception:  # noqa: BLE001 - the store is still being made
                continue
            done = sum(r[-1].status == Status.FINISHED for r in runs.values())
            self.on_done(done / self.level.trials)


def run_level(
    store: Store,
    uri: str,
    folder: Path,
    *,
    concurrent: int,
    trials: int,
    nodes: int,
    steps: int,
    step_s: float,
    remove_node: bool,
    out: Callable[[str], None],
    gpu_slots: bool = True,
) -> Level:
    """One grid of simulated trials on a fresh loopback cluster of `nodes` nodes with `concurrent` slots in all:
    logical GPUs (`gpu_slots`: Ray gives each GPU trial a fresh worker process, as on a GPU cluster) or CPUs (a
    worker runs trial after trial, so a 2-core machine measures the driver and the ledger rather than thousands
    of Python processes starting)."""
    name = f"scale-{concurrent}x{trials}"
    grid = grid_file(folder, name, trials, concurrent, steps, gpu_slots)
    spec = load_grid(grid)
    grid_trials = expand(spec)
    level = Level(concurrent, len(grid_trials), slots="GPU" if gpu_slots else "CPU")
    per_node = -(-concurrent // nodes)
    with loopback_cluster(num_cpus=0, num_gpus=0, driver_args={"log_to_driver": False}) as cluster:
        workers = [cluster.add_node(**LOOPBACK_NODE, num_cpus=per_node, num_gpus=per_node) for _ in range(nodes)]
        cluster.wait_for_nodes()
        started = time.perf_counter()

        def maybe_remove(fraction: float) -> None:
            if fraction >= REMOVE_AT:
                level.node_removed_at_s = time.perf_counter() - started
                out(f"  removing a worker node at {level.node_removed_at_s:.0f} s ({fraction:.0%} of trials done)")
                cluster.remove_node(workers[-1], allow_graceful=False)
                watch.on_done = None  # removed once; no more reading for it

        watch = _Watch(level, grid, store, experiment_name(spec), maybe_remove if remove_node else None)
        watch.start()
        try:
            outcome = submit(
                spec,
                grid_trials,
                store,
                uri,
                retry_failed=False,
                address=cluster.address,
                out=lambda line: None,
                runner=SimulatedTrial(step_s=step_s),
            )
        finally:
            watch.stop.set()
            watch.join()
        level.wall_s = time.perf_counter() - started
    runs = trial_runs_from_database(store.tracking_uri, experiment_name(spec))
    retried = {key for key, found in runs.items() if found[-1].attempt > 1}
    level.retried = len(retried)
    for key, timing in outcome.timings.items():
        if "fit_s" in timing and key not in retried:  # a retried trial's wall time holds its lost attempt
            level.overhead_s.append(timing["wall_s"] - timing["fit_s"])
            level.warm_overhead_s.append(timing["wall_s"] - timing["fit_s"] - timing.get("import_s", 0.0))
        if "close_lag_s" in timing:
            level.close_lag_s.append(timing["close_lag_s"])
    level.problems = check_grid(store, uri, spec, grid_trials, steps)
    return level


def check_grid(store: Store, uri: str, spec, grid_trials, steps: int) -> list[str]:
    """Every trial finished in exactly one run, and every logged step's point stored exactly once."""
    from gatelab.tracking.runs.bulk_history import histories

    runs = trial_runs_from_database(store.tracking_uri, experiment_name(spec))
    problems = []
    for trial in grid_trials:
        found = runs.get(trial.key, [])
        if len(found) != 1 or found[0].status != Status.FINISHED:
            problems.append(f"{trial.key}: {len(found)} run(s), status {found[-1].status if found else None}")
    wanted = list(range(LOG_EVERY, steps + 1, LOG_EVERY))
    ids = {found[-1].run_id: key for key, found in runs.items()}
    for run_id, by_metric in histories(uri, list(ids), [STEP]).items():
        logged = [step for step, _ in by_metric[STEP]]
        if logged != wanted:
            problems.append(f"{ids[run_id]}: step points {logged[:5]}... ({len(logged)}), expected {len(wanted)}")
    return problems


def bench_scale(
    concurrent: list[int], trials: int, *, nodes: int, steps: int, step_s: float, out: Callable[[str], None]
) -> dict:
    """Each level of `concurrent` (a grid of two waves; skipped, saying why, where this machine cannot hold that
    many trial workers), then a `trials`-trial grid at the first level with a node removed, then `gatelab status`
    and a no-op resubmit of that grid, each a fresh process, in one fresh home."""
    from gatelab.tracking.server.process import ensure_server, stop_server

    result: dict = {"levels": [], "not_run": [], "nodes": nodes, "steps": steps, "step_s": step_s}
    with tempfile.TemporaryDirectory(prefix="gatelab-bench-scale-") as tmp:
        folder = Path(tmp)
        store = Store.open(str(folder / "home"))
        info, _ = ensure_server(store)
        try:
            for level in concurrent:
                if not fits_in_memory(level):
                    result["not_run"].append(
                        f"{level} concurrent: {level} trial workers need ~{memory_needed_gb(level):.0f} GB "
                        f"({WORKER_MEMORY_MB} MB each); this machine has "
                        f"{psutil.virtual_memory().available / 2**30:.0f} GB available"
                    )
                    out(f"level {level}: not run, {result['not_run'][-1]}")
                    continue
                out(f"level {level}: {2 * level} trials on {nodes} nodes ...")
                measured = run_level(
                    store,
                    info.uri,
                    folder,
                    concurrent=level,
                    trials=2 * level,
                    nodes=nodes,
                    steps=steps,
                    step_s=step_s,
                    remove_node=False,
                    out=out,
                )
                result["levels"].append(measured.summary())
            out(f"large grid: {trials} trials at {concurrent[0]} concurrent (CPU slots), a node removed ...")
            large = run_level(
                store,
                info.uri,
                folder,
                concurrent=concurrent[0],
                trials=trials,
                nodes=nodes,
                steps=steps,
                step_s=step_s,
                remove_node=True,
                out=out,
                gpu_slots=False,
            )
            result["large"] = large.summary()
            grid, home = folder / f"scale-{concurrent[0]}x{trials}.yaml", ["--home", str(store.home)]
            result["after"] = {
                "status_s": timed_gatelab("status", str(grid), *home),
                "noop_resubmit_s": timed_gatelab("submit", str(grid), *home),
            }
        finally:
            stop_server(store)
    return result
