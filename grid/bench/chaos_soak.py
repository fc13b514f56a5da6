"""`gatelab bench chaos`: a soak of the fault tolerance. A grid of many tiny trials is submitted twice, each with
`gatelab submit` as a user runs it on a local Ray, in its own temporary home: once undisturbed, once while a
chaos thread (grid/bench/chaos.py) signals random trial workers at random moments. The disturbed grid must
still finish every trial, with one MLflow run per trial key, no step missing from or repeated in any history,
and the undisturbed run's losses (grid/bench/soak_checks.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

from gatelab.grid.bench.chaos import Chaos
from gatelab.grid.bench.soak_checks import GridLedger, compare, largest_loss_difference
from gatelab.grid.dispatch.ray_jobs import experiment_name
from gatelab.grid.spec.expand import expand
from gatelab.grid.spec.grid_file import load_grid
from gatelab.tracking import Store, ensure_server, stop_server
from gatelab.tracking.runs.ledger import trial_records_for_key
from gatelab.trainer.config.metric_names import STEP

# Four variants with different gate code paths (none, SDPA-output gate elementwise and headwise, value gate).
VARIANTS = ("baseline", "g1_elementwise_sigmoid", "g1_headwise_sigmoid", "g2_elementwise_sigmoid")
SUBMIT_TIMEOUT_S = 3600.0  # a submit that hangs this long is a violation in itself


def soak_grid(path: Path, trials: int, steps: int, checkpoint_every: int, max_retries: int) -> Path:
    """A grid of `trials` tiny trials (variants x seeds, as many variants as divide `trials`), logging every
    step, evaluating every `checkpoint_every` x 2 steps and checkpointing every `checkpoint_every`, so a retried
    trial resumes mid-way."""
    variants = next(n for n in range(len(VARIANTS), 0, -1) if trials % n == 0)
    grid = {
        "name": "chaos",
        "base": {
            "model": {"preset": "tiny"},
            "schedule": {"max_steps": steps, "batch_size": 8, "log_every": 1},
            "eval": {"every": 2 * checkpoint_every, "batches": 1, "long_context_factors": [1, 2]},
            "checkpoint": {"every": checkpoint_every, "keep_last": 2},
        },
        "axes": {"variant": list(VARIANTS[:variants]), "seed": list(range(trials // variants))},
        "resources": {"cpus": 1, "gpus": 0},
        "ray": {"max_concurrent": 2, "max_retries": max_retries},
    }
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


def _submit(grid: Path, home: Path, log: Path, chaos: dict | None, step_of) -> tuple[int, float, list]:
    """`gatelab submit GRID` in a fresh process (its own session, so a hung one is killed whole), with a chaos
    thread on its workers when `chaos` holds Chaos's settings. (exit code, wall seconds, signals sent)."""
    started = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gatelab.grid.cli", "submit", str(grid), "--home", str(home)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        monkey = Chaos(proc.pid, step_of=step_of, **chaos).start() if chaos else None
        try:
            code = proc.wait(timeout=SUBMIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            code = proc.wait()
        finally:
            sent = monkey.stop() if monkey else []
    return code, time.perf_counter() - started, sent


def bench_chaos(
    *,
    trials: int,
    kills: int,
    steps: int,
    sigterm_share: float,
    seed: int = 0,
    checkpoint_every: int = 10,
    gap_s: tuple[float, float] | None = None,
    keep: Path | None = None,
) -> dict:
    """Run the soak; the figures and every violation found. `gap_s`: the range of the random wait before each
    signal (default: around 1.5 x the undisturbed wall time / (kills + 1)). `keep`: a folder to keep both homes and
    the submits' logs in (default: a temporary one, removed)."""
    with tempfile.TemporaryDirectory(prefix="gatelab-chaos-") as tmp:
        root = Path(keep) if keep else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        # Every signal may land on one trial: its retry budget covers them all, so none is lost for budget.
        grid = soak_grid(root / "chaos.yaml", trials, steps, checkpoint_every, max_retries=kills + 1)
        spec = load_grid(grid, [])
        keys = [trial.key for trial in expand(spec)]
        runs = {}
        for name in ("undisturbed", "chaos"):
            chaos = None
            if name == "chaos":
                # Spread over the whole grid, which lasts longer with chaos: each kill costs a retry, often on a
                # fresh worker that imports torch first. At a mean gap of the undisturbed wall time over kills + 1,
                # kills came faster than the retries recovered (24 trials, 14 kills: all in the 3 trials in flight
                # one after another); 1.5 times that spreads them.
                mean = 1.5 * runs["undisturbed"][1] / (kills + 1)
                chaos = {"kills": kills, "seed": seed, "gap_s": gap_s or (mean / 2, 3 * mean / 2)}
                chaos["sigterm_share"] = sigterm_share
            store = Store.open(root / name)
            info, _ = ensure_server(store)  # up before the submit, as for every submit after a home's first
            try:
                code, wall, sent = _submit(
                    grid, store.home, root / f"{name}.log", chaos, _step_reader(info.uri, experiment_name(spec))
                )
                runs[name] = (code, wall, sent, GridLedger.read(info.uri, experiment_name(spec)))
            finally:
                stop_server(store)
        undisturbed, disturbed = runs["undisturbed"][3], runs["chaos"][3]
        violations = compare(disturbed, undisturbed, keys)
        for name, (code, *_rest) in runs.items():
            if code != 0:
                violations.submits.append(f"{name} submit exited {code}: {_tail(root / f'{name}.log')}")
        sent = runs["chaos"][2]
        return {
            "trials": len(keys),
            "steps": steps,
            "checkpoint_every": checkpoint_every,
            "seed": seed,
            "kills": len(sent),
            "kills_wanted": kills,
            "signals": dict(Counter(kill.signal for kill in sent)),
            "retries": disturbed.retries(),
            "lost": len(violations.lost),
            "duplicated_runs": len(violations.duplicated_runs),
            "duplicated_steps": len(violations.duplicated_steps),
            "missing_steps": len(violations.missing_steps),
            "max_loss_difference": largest_loss_difference(disturbed, undisturbed),
            "violations": violations.count(),
            "violation_lines": violations.lines(),
            "wall_s": runs["chaos"][1],
            "undisturbed_wall_s": runs["undisturbed"][1],
            "kills_past_imports": sum(kill.training for kill in sent),
            "kill_times_s": [round(kill.at_s, 1) for kill in sent],
            "killed_trials": len({kill.key for kill in sent}),
            "kill_steps": [kill.step for kill in sent],
        }


def _step_reader(uri: str, experiment: str):
    def step_of(key: str) -> int | None:
        record = trial_records_for_key(uri, experiment, key)
        return int(record.metrics[STEP]) if record is not None and STEP in record.metrics else None

    return step_of


def _tail(log: Path, lines: int = 15) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
