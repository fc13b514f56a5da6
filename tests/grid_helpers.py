"""Shared helpers for the grid tests: tiny grid files and ledger checks against a real MLflow store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
GATELAB_COMMAND = (sys.executable, "-m", "gatelab.grid.cli")  # `gatelab` as a user runs it, in this environment


def run_gatelab(*args: str, cwd: Path = ROOT, env: dict | None = None, timeout: float = 300):
    """`gatelab ARGS` run to its end in a process of its own: its exit status, stdout and stderr apart."""
    return subprocess.run([*GATELAB_COMMAND, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def write_grid(
    path: Path,
    name: str,
    variants: list[str],
    *,
    max_steps: int = 12,
    seeds=(0,),
    gpus: int = 0,
    cpus: int = 1,
    workers: int = 0,
    max_concurrent: int = 2,
    max_retries: int = 2,
    checkpoint_every: int = 4,
    model_overrides: dict | None = None,
) -> Path:
    grid = {
        "name": name,
        "base": {
            "model": {"preset": "tiny", **({"overrides": model_overrides} if model_overrides else {})},
            "schedule": {"max_steps": max_steps, "batch_size": 4, "log_every": 1},
            "eval": {"every": 6, "batches": 1, "long_context_factors": [1, 2]},
            "checkpoint": {"every": checkpoint_every, "keep_last": 2},
        },
        "axes": {"variant": variants, "seed": list(seeds)},
        "resources": {"gpus": gpus, "cpus": cpus, **({"workers": workers} if workers else {})},
        "ray": {"max_concurrent": max_concurrent, "max_retries": max_retries},
    }
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


def gatelab(*args: str, home: Path, env: dict | None = None) -> subprocess.Popen:
    """`gatelab ARGS --home HOME` as a user runs it, in its own process group (so a test can kill it whole);
    `env`: added to this process's environment."""
    return subprocess.Popen(
        [*GATELAB_COMMAND, *args, "--home", str(home)],
        cwd=ROOT,
        env={**os.environ, **env} if env else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def child_runs(uri: str, experiment: str):
    from mlflow.tracking import MlflowClient  # here: the CLI helpers above serve tests without MLflow

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    return client, client.search_runs([exp.experiment_id], filter_string="tags.`gatelab.kind` = 'trial'")


def assert_history_complete(client, run_id: str, max_steps: int) -> None:
    """Every step 1..max_steps logged exactly once for the per-step train metrics."""
    for key in ("train_loss", "lr"):
        steps = sorted(m.step for m in client.get_metric_history(run_id, key))
        assert steps == list(range(1, max_steps + 1)), (key, steps)


def wait_for(predicate, timeout: float, proc: subprocess.Popen | None = None, what: str = "the condition") -> None:
    """Poll `predicate` until it holds; fail on the timeout, or at once with its output if `proc` has exited."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(proc.stdout.read())
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def statuses(grid: Path | str, home: Path, env: dict | None = None) -> dict:
    """`gatelab status GRID --json` by trial key."""
    proc = gatelab("status", str(grid), "--json", home=home, env=env)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    return {row["key"]: row for row in json.loads(out[out.index("[") :])}
