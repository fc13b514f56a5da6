"""`gatelab bench ledger`: the home's MLflow server under the load of many trials logging at once.

N writer processes each open a run as a trial worker does (`MlflowTracker.create`, a journal in its own folder)
and log `metrics` values a step at `rate` steps/s for `seconds`, then end the run `finished` as a trial does.
The values are a known function of (writer, step, metric), so afterwards every stored point is checked: each run
holds every step of every metric exactly once with the value logged, nothing is left in a journal, and every run
ended FINISHED with `gatelab.status` finished. Measured beside it:

- offered points/s (writers x metrics x steps/s) against sustained points/s (points stored / the time from the
  start until the last run's close returned: what the server took, end to end);
- the steps the writers managed (a tracker whose outbox is full makes logging wait: the offered rate is then
  not reached) and each writer's close lag (from its last step until everything it logged was stored);
- the server's CPU (its process and children, in cores), when it is the home's server on this machine.

The writers run on this machine too: on 2 cores they take CPU the server would have. On a cluster they are on
the GPU nodes, so the server's figures here are a floor of what a head node sustains.
"""

from __future__ import annotations

import multiprocessing
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from gatelab.trainer.config.outcome import Status
from gatelab.trainer.config.run_tags import KIND_TAG

BENCH_KIND = "bench-ledger"  # the runs' gatelab.kind: never a trial of a grid
START_DELAY_S = 2.0  # after every writer is ready, so that they begin together


def metric_name(index: int) -> str:
    return f"probe.{index:04d}"


def logged_value(writer: int, step: int, index: int) -> float:
    """What writer `writer` logs for metric `index` at `step`: distinct per point, exact in float64 and float32."""
    return float(writer * 1_000 + index) + step / 1024


@dataclass(frozen=True)
class WriterResult:
    writer: int
    run_id: str
    steps: int
    """Steps logged (fewer than offered when logging had to wait for the server)."""
    close_lag_s: float
    """From the last step until the run's close returned, everything it logged stored."""
    closed_at: float
    """time.time() when its close returned."""
    error: str | None = None


def _write(uri: str, experiment: str, writer: int, metrics: int, rate: float, seconds: float, folder: str, ready, go):
    """One writer process: open, log at the rate until the time is up, end `finished`."""
    from gatelab.tracking.runs.mlflow_tracker import MlflowTracker

    run_id, steps = "", 0
    try:
        tracker = MlflowTracker.create(
            uri,
            experiment,
            run_name=f"writer-{writer}",
            tags={KIND_TAG: BENCH_KIND},
            params={"writer": writer, "metrics": metrics, "rate": rate},
            journal=Path(folder) / f"writer-{writer}.journal",
        )
        run_id = tracker.run_id
        ready.put(writer)
        start = go.get()
        deadline = start + seconds
        while True:
            due = start + steps / rate
            if due >= deadline:
                break
            time.sleep(max(0.0, due - time.time()))
            steps += 1
            tracker.log_metrics({metric_name(i): logged_value(writer, steps, i) for i in range(metrics)}, steps)
        ended = time.time()
        tracker.set_status(Status.FINISHED)  # ends the run and closes the tracker: waits until all is stored
        closed = time.time()
        return WriterResult(writer, run_id, steps, closed - ended, closed)
    except Exception as err:  # reported, and counted as a failure of the bench
        ready.put(writer)
        return WriterResult(writer, run_id, steps, float("nan"), time.time(), f"{type(err).__name__}: {err}")


def _server_cpu_seconds(pid: int | None) -> float | None:
    if pid is None:
        return None
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return None
    total = 0.0
    for p in procs:
        try:
            times = p.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def _check(uri: str, results: list[WriterResult], metrics: int, folder: Path) -> dict:
    """Every point stored once with its value; runs ended as they should; journals empty."""
    from gatelab.tracking.runs.bulk_history import histories
    from gatelab.tracking.runs.run_ends import run_ends

    ran = [r for r in results if r.run_id]
    stored = histories(uri, [r.run_id for r in ran], [metric_name(i) for i in range(metrics)])
    lost = doubled = wrong = points = 0
    for r in ran:
        for i in range(metrics):
            history = stored[r.run_id][metric_name(i)]
            points += len(history)
            steps = [s for s, _ in history]
            doubled += len(steps) - len(set(steps))
            lost += len(set(range(1, r.steps + 1)) - set(steps))
            wrong += sum(1 for s, v in history if abs(v - logged_value(r.writer, s, i)) > 1e-3)
    ends = run_ends(uri, [r.run_id for r in ran])
    unfinished = [run_id for run_id, end in ends.items() if end != ("FINISHED", Status.FINISHED)]
    journals = [p.name for p in folder.glob("*.journal") if p.stat().st_size > 0]
    return {
        "points_stored": points,
        "lost": lost,
        "doubled": doubled,
        "wrong_values": wrong,
        "runs_not_finished": len(unfinished) + len(results) - len(ran),
        "journals_left": journals,
    }


def bench_ledger(
    uri: str, *, writers: int, metrics: int, rate: float, seconds: float, server_pid: int | None = None
) -> dict:
    """Run the load against the tracking server at `uri` and check what it stored (see the module's doc)."""
    from gatelab.tracking.runs.run_ends import ensure_experiment

    experiment = f"bench-ledger-{time.strftime('%Y%m%d-%H%M%S')}-{writers}x{metrics}"
    ensure_experiment(uri, experiment)
    context = multiprocessing.get_context("spawn")  # fresh processes, as trial workers are
    with tempfile.TemporaryDirectory(prefix="gatelab-bench-ledger-") as tmp, context.Manager() as manager:
        ready, go = manager.Queue(), manager.Queue()
        with context.Pool(writers) as pool:
            pending = pool.starmap_async(
                _write, [(uri, experiment, w, metrics, rate, seconds, tmp, ready, go) for w in range(writers)]
            )
            for _ in range(writers):
                ready.get(timeout=600)
            start = time.time() + START_DELAY_S
            cpu_before = _server_cpu_seconds(server_pid)
            for _ in range(writers):
                go.put(start)
            results = pending.get()
        cpu_after = _server_cpu_seconds(server_pid)
        end = max(r.closed_at for r in results)
        checked = _check(uri, results, metrics, Path(tmp))
    wall = end - start
    lags = sorted(r.close_lag_s for r in results if r.error is None)
    return {
        "writers": writers,
        "metrics_per_step": metrics,
        "steps_per_s": rate,
        "seconds": seconds,
        "offered_points_per_s": writers * metrics * rate,
        "steps_offered": int(seconds * rate) * writers,
        "steps_logged": sum(r.steps for r in results),
        "sustained_points_per_s": checked["points_stored"] / wall if wall > 0 else None,
        "wall_s": wall,
        "close_lag_s": {"median": lags[len(lags) // 2], "max": lags[-1]} if lags else None,
        "server_cores": (cpu_after - cpu_before) / wall if cpu_before is not None and cpu_after is not None else None,
        "errors": [r.error for r in results if r.error],
        **checked,
        "writer_results": [asdict(r) for r in results],
    }


def violations(result: dict) -> list[str]:
    """What makes the bench fail: anything lost, doubled or wrong, a run not finished, a journal left, an error."""
    out = [f"{result[k]} points {k}" for k in ("lost", "doubled", "wrong_values") if result[k]]
    if result["runs_not_finished"]:
        out.append(f"{result['runs_not_finished']} runs did not end finished")
    if result["journals_left"]:
        out.append(f"journals left unsent: {', '.join(result['journals_left'])}")
    out += [f"writer error: {e}" for e in result["errors"]]
    return out


def bench_ledger_home(home: Path | None, backend: str | None = None, **load) -> dict:
    """`bench_ledger` against a home's own server: `home`'s (started if needed, left as found), or by default a
    fresh temporary home's, so that a benchmark never adds runs to a user's store; `backend`: that fresh home's
    database when not its SQLite file (a postgresql:// URI)."""
    from gatelab.tracking import Store, ensure_server, stop_server

    with tempfile.TemporaryDirectory(prefix="gatelab-bench-home-") as tmp:
        store = Store.open(home if home is not None else tmp, backend=backend)
        info, started = ensure_server(store)
        try:
            name = "sqlite" if store.is_sqlite else "postgresql"
            return {
                "backend": name,
                "server_workers": store.server_workers,
                **bench_ledger(info.uri, server_pid=info.pid, **load),
            }
        finally:
            if started:
                stop_server(store)
