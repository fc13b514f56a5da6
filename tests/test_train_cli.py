"""`gatelab train` against a real MLflow server: SIGKILL mid-run, rerun, and the result equals an
uninterrupted run with a metric history that has no gap and no duplicated step."""

import os
import signal
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from gatelab.grid.spec.trial_file import load_trial_config
from gatelab.tracking import Store, stop_server
from gatelab.trainer.config.trial import run_params
from gatelab.trainer.run import run_trial
from gatelab.trainer.tracker import InMemoryTracker

from grid_helpers import gatelab

pytestmark = [pytest.mark.mlflow]

ROOT = Path(__file__).resolve().parents[1]
TRIAL = ROOT / "ablations" / "tiny_trial.yaml"
SETS = ["--set", "schedule.max_steps=240", "--set", "schedule.log_every=1", "--set", "eval.every=30"]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    path = tmp_path_factory.mktemp("home")
    yield path
    stop_server(Store(path))


def test_sigkill_then_rerun_equals_uninterrupted(home, tmp_path):
    checkpoints = Store(home).checkpoints_dir
    proc = gatelab("train", str(TRIAL), *SETS, home=home)
    deadline = time.time() + 240
    while time.time() < deadline and not list(checkpoints.glob("*/checkpoints/step-00000100.ckpt")):
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.05)
    time.sleep(0.3)  # somewhere past step 100: an arbitrary step, not a checkpoint boundary
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = max(int(p.stem.split("-")[1]) for p in checkpoints.glob("*/checkpoints/*.ckpt"))
    assert killed_at < 240, "the run finished before it was killed; the test proves nothing"

    rerun = gatelab("train", str(TRIAL), *SETS, home=home)
    out, _ = rerun.communicate(timeout=400)
    assert rerun.returncode == 0, out
    assert "resuming trial" in out and ": finished" in out

    again = gatelab("train", str(TRIAL), *SETS, home=home)
    out_again, _ = again.communicate(timeout=200)
    assert again.returncode == 0 and "already finished" in out_again

    config = load_trial_config(TRIAL, [s for s in SETS if s != "--set"])
    reference = InMemoryTracker()
    expected = run_trial(config, reference, tmp_path / "ref", Store(home).cache_dir)

    client = MlflowClient(Store(home).tracking_uri)
    run = client.search_runs([client.get_experiment_by_name("gatelab-train").experiment_id])[0]
    assert run.info.status == "FINISHED" and run.data.tags["gatelab.status"] == "finished"
    assert run.data.metrics["final_val_loss"] == pytest.approx(expected.summary["final_val_loss"], abs=1e-5)
    for key in ("train_loss", "val_loss", "lr", "grad_norm"):
        history = client.get_metric_history(run.info.run_id, key)
        steps = sorted(m.step for m in history)
        assert steps == [s for s, _ in reference.metrics[key]], key  # no gap, no duplicate
        by_step = {m.step: m.value for m in history}
        for step, value in reference.metrics[key]:
            assert by_step[step] == pytest.approx(value, rel=1e-5, abs=1e-6), (key, step)
    for key in ("f_attn", "sink_eps", "m_act", "gate_mean", "final_val_loss"):  # the final probes: once each
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [240], key
    # The gate axes, LR and seed are params (what the compare page plots), kept through the resume, tags too.
    axes = config.variant_definition().axes
    assert {key: str(value) for key, value in run_params(config).items()}.items() <= run.data.params.items()
    assert {"gate_position", "gate_granularity", "gate_activation", "optim.lr", "seed"} <= set(run.data.params)
    assert axes.items() <= run.data.tags.items() and run.data.tags["gatelab.attempt"] == "2"  # resumed once
