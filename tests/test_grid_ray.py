"""Grids on a real local Ray with a real MLflow server: layout, idempotence, node loss, out-of-memory."""

import json
import threading
import time
from pathlib import Path

import pytest
import ray

from gatelab.grid.cli.main import main
from gatelab.grid.dispatch.local_ray import LOOPBACK_NODE, init_local_ray, loopback_cluster
from gatelab.grid.dispatch.submit import submit
from gatelab.grid.spec.expand import expand
from gatelab.grid.spec.grid_file import load_grid
from gatelab.trainer.config.trial_folder import TrialFolder

from grid_helpers import assert_history_complete, child_runs, write_grid

pytestmark = [pytest.mark.ray, pytest.mark.mlflow]


def test_grid_on_local_ray_with_logical_gpus(served_store, tmp_path):
    store, uri = served_store
    path = write_grid(
        tmp_path / "e2e.yaml", "e2e", ["baseline", "g1_elementwise_sigmoid", "g1_headwise_sigmoid"], gpus=1
    )
    spec = load_grid(path)
    trials = expand(spec)
    init_local_ray(num_cpus=4, num_gpus=2, include_dashboard=False)
    try:
        outcome = submit(spec, trials, store, uri, retry_failed=False)
        again = submit(spec, trials, store, uri, retry_failed=False)
    finally:
        ray.shutdown()
    assert set(outcome.statuses.values()) == {"finished"} and len(outcome.statuses) == 3
    assert again.skipped == 3  # resubmitting is idempotent

    client, runs = child_runs(uri, "e2e")
    parents = client.search_runs([runs[0].info.experiment_id], filter_string="tags.`gatelab.kind` = 'grid'")
    assert len(parents) == 1 and len(runs) == 3
    parent = parents[0]
    assert parent.data.tags["gatelab.grid"] == "e2e" and parent.data.tags["gatelab.grid_file_hash"] == spec.file_hash
    assert parent.data.tags["gatelab.git_sha"] and parent.info.status == "FINISHED"
    by_variant = {r.data.tags["variant"]: r for r in runs}
    assert set(by_variant) == {"baseline", "g1_elementwise_sigmoid", "g1_headwise_sigmoid"}
    for run in runs:
        tags, metrics = run.data.tags, run.data.metrics
        assert tags["mlflow.parentRunId"] == parent.info.run_id and tags["gatelab.status"] == "finished"
        assert tags["trial_key"] in {t.key for t in trials} and tags["seed"] == "0" and tags["lr"] == "0.003"
        for key in ("final_val_ppl", "final_val_loss", "spike_count", "max_spike_ratio", "f_attn", "m_act"):
            assert key in metrics, key
        assert_history_complete(client, run.info.run_id, 12)
    assert by_variant["g1_headwise_sigmoid"].data.tags["gate_granularity"] == "headwise"
    assert by_variant["g1_elementwise_sigmoid"].data.tags["paper_ref"] == "Table 1 row 5"
    assert "gate_mean" in by_variant["g1_elementwise_sigmoid"].data.metrics
    assert "gate_mean" not in by_variant["baseline"].data.metrics


def _submit_on_a_local_ray(spec, store, uri, **resources):
    trials = expand(spec)
    init_local_ray(include_dashboard=False, **resources)
    try:
        return trials, submit(spec, trials, store, uri, retry_failed=False)
    finally:
        ray.shutdown()


def _submit_and_lose_the_node(spec, store, uri, checkpoint_glob: str, *, replace_node: bool):
    """Submit a one-trial grid on a cluster whose only node big enough for the trial is removed once a
    checkpoint matching `checkpoint_glob` exists (and replaced by a fresh node when `replace_node`)."""
    trials = expand(spec)
    results = {}
    driver = threading.Thread(
        target=lambda: results.update(outcome=submit(spec, trials, store, uri, retry_failed=False))
    )
    with loopback_cluster(num_cpus=1) as cluster:  # the head is too small for a 2-CPU trial
        doomed = cluster.add_node(num_cpus=2, **LOOPBACK_NODE)
        driver.start()
        checkpoints = TrialFolder.of(store.checkpoints_dir, trials[0].key).checkpoints
        deadline = time.time() + 300
        while time.time() < deadline and not list(checkpoints.glob(checkpoint_glob)):
            time.sleep(0.1)
        assert list(checkpoints.glob("*.ckpt")), "no checkpoint before the node was removed"
        cluster.remove_node(doomed)
        if replace_node:
            cluster.add_node(num_cpus=2, **LOOPBACK_NODE)
        driver.join(timeout=400)
        assert not driver.is_alive()
    return results["outcome"]


def test_node_loss_mid_trial_finishes_from_checkpoint_on_another_node(served_store, tmp_path):
    store, uri = served_store
    path = write_grid(
        tmp_path / "nodeloss.yaml",
        "nodeloss",
        ["g1_elementwise_sigmoid"],
        max_steps=400,
        cpus=2,
        max_retries=3,
        checkpoint_every=20,
    )
    spec = load_grid(path)
    trials = expand(spec)
    outcome = _submit_and_lose_the_node(spec, store, uri, "step-0000004*.ckpt", replace_node=True)
    assert outcome.statuses == {trials[0].key: "finished"}
    client, runs = child_runs(uri, "nodeloss")
    assert len(runs) == 1
    run = runs[0]
    assert run.data.tags["gatelab.attempt"] == "2"  # the retry continued the same MLflow run
    assert_history_complete(client, run.info.run_id, 400)


def test_two_worker_ddp_trial_through_ray_train(served_store, tmp_path):
    store, uri = served_store
    # seed 1: not the e2e test's trial (the key ignores how many workers train it: they split the batch)
    spec = load_grid(
        write_grid(tmp_path / "ddp.yaml", "ddp", ["g1_headwise_sigmoid"], max_steps=12, cpus=2, workers=2, seeds=(1,))
    )
    assert spec.resources.ddp_workers == 2
    trials, outcome = _submit_on_a_local_ray(spec, store, uri, num_cpus=3)
    assert outcome.statuses == {trials[0].key: "finished"}
    client, runs = child_runs(uri, "ddp")
    run = runs[0]
    assert run.data.tags["gatelab.status"] == "finished" and "final_val_ppl" in run.data.metrics
    assert_history_complete(client, run.info.run_id, 12)
    # The global batch (4 sequences of 64 tokens) is split over the two ranks.
    assert run.data.metrics["tokens_seen"] == 12 * 4 * 64
    assert len(list((store.checkpoints_dir / trials[0].key / "other-ranks").iterdir())) == 1  # rank 1 ran


def test_bench_grid_accounts_for_every_slot_second(tmp_path):
    from gatelab.grid.bench.grid import bench_grid

    path = write_grid(
        tmp_path / "bench.yaml",
        "bench",
        ["baseline", "g1_headwise_sigmoid", "g1_elementwise_sigmoid"],
        max_steps=6,
        checkpoint_every=3,
    )
    result = bench_grid(path, slots=2)
    assert result["finished"] == result["trials"] == 3 and result["expand_10k_trials"] == 10_000
    assert 0 < result["efficiency"] < result["efficiency_ray_running"] <= 1
    lost = result["lost"]
    # Fresh workers import the trainer once each; the parts are measured separately, so the idle rest
    # is what is left and can only come out negative if the accounting double-counts.
    assert lost["ray_start"] > 0 and lost["worker_imports"] > 0 and lost["other_trial_overhead"] > 0
    assert lost["idle_slots"] > -0.01


def test_a_trial_killed_for_memory_is_recorded_failed_and_not_retried(served_store, tmp_path, monkeypatch, capsys):
    store, uri = served_store
    # Ray's memory monitor kills a running worker whenever the node's memory use is over its threshold: at 1%
    # the trial's worker is killed as soon as it runs, as a trial too large for its node would be. Without
    # NO_OOM_RETRIES Ray retries such a kill indefinitely (max_retries does not bound it) and submit never returns.
    monkeypatch.setenv("RAY_memory_usage_threshold", "0.01")
    monkeypatch.setenv("RAY_memory_monitor_refresh_ms", "100")
    path = write_grid(tmp_path / "oom.yaml", "oom", ["g1_headwise_sigmoid"], max_retries=2)
    spec = load_grid(path)
    outcome = {}
    assert not ray.is_initialized()  # submit starts the local Ray, as `gatelab submit` does
    driver = threading.Thread(
        target=lambda: outcome.update(result=submit(spec, expand(spec), store, uri, retry_failed=False)), daemon=True
    )
    try:
        driver.start()
        driver.join(timeout=180)
        assert not driver.is_alive(), "submit kept retrying a trial killed for memory"
    finally:
        ray.shutdown()
    assert list(outcome["result"].statuses.values()) == ["failed"]
    _, runs = child_runs(uri, "oom")
    assert len(runs) == 1 and runs[0].info.status == "FAILED"
    tags = runs[0].data.tags
    assert tags["gatelab.status"] == "failed" and tags["gatelab.error"].startswith("out_of_memory: ")
    assert tags["variant"] == "g1_headwise_sigmoid" and tags["gate_granularity"] == "headwise"
    capsys.readouterr()  # the submit's own progress lines
    assert main(["status", str(path), "--home", str(store.home), "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["status"] == "failed" and row["error"] == tags["gatelab.error"]


def test_a_trial_lost_with_no_retries_left_is_recorded_failed_in_its_run(served_store, tmp_path):
    store, uri = served_store
    spec = load_grid(
        write_grid(
            tmp_path / "lost.yaml", "lost", ["baseline"], max_steps=400, cpus=2, max_retries=0, checkpoint_every=20
        )
    )
    trials = expand(spec)
    outcome = _submit_and_lose_the_node(spec, store, uri, "*.ckpt", replace_node=False)
    assert outcome.statuses == {trials[0].key: "failed"}
    _, runs = child_runs(uri, "lost")
    assert len(runs) == 1 and runs[0].info.status == "FAILED"
    tags = runs[0].data.tags
    # The run the worker opened, not a new one; its attempt count is the worker's.
    assert tags["gatelab.status"] == "failed" and tags["gatelab.attempt"] == "1"
    assert tags["gatelab.error"].split(":")[0] in ("NodeDiedError", "WorkerCrashedError"), tags["gatelab.error"]


@pytest.mark.skipif(
    Path("/proc/sys/vm/overcommit_memory").read_text().strip() == "1",
    reason="with overcommit always on, a too-large model is killed by the kernel, not refused",
)
def test_a_ddp_trial_out_of_memory_is_recorded_and_not_trained_again(served_store, tmp_path):
    store, uri = served_store
    # A 512-GB FFN weight: the CPU allocator refuses it at once on every rank, as CUDA refuses a model too
    # large for its GPUs. Ray Train would retry the worker group max_retries times; the retry must not train.
    spec = load_grid(
        write_grid(
            tmp_path / "ddpoom.yaml",
            "ddpoom",
            ["baseline"],
            max_steps=12,
            cpus=2,
            workers=2,
            max_retries=2,
            model_overrides={"ffn_dim": 4_000_000_000},
        )
    )
    trials, outcome = _submit_on_a_local_ray(spec, store, uri, num_cpus=3)
    assert outcome.statuses == {trials[0].key: "failed"}
    _, runs = child_runs(uri, "ddpoom")
    tags = runs[0].data.tags
    assert tags["gatelab.status"] == "failed" and runs[0].info.status == "FAILED"
    assert tags["gatelab.error"].startswith("out_of_memory: rank "), tags["gatelab.error"]
    assert "can't allocate memory" in tags["gatelab.error"]


def _most_at_once(runs) -> int:
    """The largest number of runs whose [start, end] intervals overlap at one moment."""
    events = sorted([(r.info.start_time, 1) for r in runs] + [(r.info.end_time, -1) for r in runs])
    running = most = 0
    for _, change in events:
        running += change
        most = max(most, running)
    return most


def test_half_a_gpu_per_trial_runs_two_trials_on_each_logical_gpu(served_store, tmp_path, capsys):
    store, uri = served_store
    path = write_grid(
        tmp_path / "shared.yaml",
        "shared-gpu",
        ["baseline", "g1_elementwise_sigmoid"],
        seeds=(0, 1),
        gpus=0.5,
        max_concurrent=4,
    )
    spec = load_grid(path)
    assert spec.resources.gpus == 0.5 and spec.resources.ddp_workers == 1
    _, outcome = _submit_on_a_local_ray(spec, store, uri, num_cpus=4, num_gpus=1)
    assert set(outcome.statuses.values()) == {"finished"} and len(outcome.statuses) == 4
    _, runs = child_runs(uri, "shared-gpu")
    # Four CPU slots and max_concurrent 4, but one GPU in halves: Ray runs two trials at a time, not four.
    assert _most_at_once(runs) == 2
    for command in (["submit", str(path), "--dry-run"], ["status", str(path)]):
        assert main([*command, "--home", str(store.home)]) == 0
        assert "1 CPU / 0.5 GPU per trial (2 trials share each GPU)" in capsys.readouterr().out, command
