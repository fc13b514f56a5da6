"""A trial of several workers (GPUs): DDP through Ray Train V2's TorchTrainer and its Lightning integration.

The Ray task that holds the trial's lock and MLflow run (grid/dispatch/worker.py) starts a TorchTrainer; each Train
worker runs the same `trainer.run.run_trial` with Lightning's RayDDPStrategy. Only rank 0 reports to MLflow
and writes the trial's files; all ranks share the checkpoint directory, so a restarted worker group (Ray
Train's FailureConfig: a lost worker or node) resumes from the newest checkpoint like a single-process trial.
RayTrainReportCallback reports only per epoch, so we do not use it; our checkpoints are our own, and Train's
`name` is the trial key (resubmitting the same name resumes). Both: docs/libraries.md, Ray Train V2.
"""

from __future__ import annotations

from pathlib import Path

from gatelab.grid.dispatch.failures import failure_reason, is_out_of_memory
from gatelab.trainer.config.outcome import Status, TrialResult
from gatelab.trainer.config.trial_folder import TrialFolder

RESULT_FILE = "ddp-result.json"
# Written by the rank that ran out of memory. Ray Train retries every worker-group failure alike (its failure
# policy cannot tell a CUDA OOM from a lost node), but out-of-memory is deterministic (it would recur): the retried
# attempt finds this file and ends at once as failed instead of training into the same wall again.
OUT_OF_MEMORY_FILE = "ddp-out-of-memory.txt"


def _train_loop(payload: dict) -> None:
    """Runs on every Train worker."""
    import ray.train
    from ray.train.lightning import RayDDPStrategy, RayLightningEnvironment, prepare_trainer

    from gatelab.trainer.run import Launch, run_trial
    from gatelab.trainer.tracker import InMemoryTracker

    rank = ray.train.get_context().get_world_rank()
    trial_dir = Path(payload["trial_dir"])
    out_of_memory = trial_dir / OUT_OF_MEMORY_FILE
    if out_of_memory.exists():  # an earlier attempt of this fit: report it, train nothing
        if rank == 0:
            failed = TrialResult(Status.FAILED, error=failure_reason(MemoryError(out_of_memory.read_text())))
            (trial_dir / RESULT_FILE).write_text(failed.to_json())
        return
    if rank == 0:
        from gatelab.tracking.runs.mlflow_tracker import MlflowTracker
        from gatelab.tracking.server.process import use_server_credentials
        from gatelab.tracking.store import Store

        use_server_credentials(Store(payload["home"]), payload["tracking_uri"])
        tracker = MlflowTracker.resume(
            payload["tracking_uri"], payload["run_id"], journal=TrialFolder(trial_dir).journal
        )
    else:
        tracker = InMemoryTracker()  # other ranks compute the same metrics; only rank 0's are kept
    launch = Launch(
        strategy=RayDDPStrategy(), plugins=(RayLightningEnvironment(),), prepare=prepare_trainer, rank_zero=rank == 0
    )
    try:
        result = run_trial(payload["config"], tracker, trial_dir, Path(payload["cache_dir"]), launch=launch)
    except Exception as err:
        if is_out_of_memory(err):  # not, say, a collective error of a rank whose peer was lost: that is retried
            out_of_memory.write_text(f"rank {rank}: {str(err).splitlines()[0]}")
        raise
    finally:
        if rank == 0:
            tracker.close()
    if rank == 0:  # the driver reads rank 0's outcome from storage (Train V2 keeps only checkpointed reports)
        (trial_dir / RESULT_FILE).write_text(result.to_json())


def run_ddp_trial(job, run_id: str, trial_dir: Path) -> TrialResult:
    """Train one trial on job.ddp_workers Ray Train workers; returns rank 0's result (FAILED, with the reason,
    when a rank ran out of memory)."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    workers = job.ddp_workers
    per_worker = {"CPU": job.cpus // workers, **({"GPU": job.gpus // workers} if job.gpus else {})}
    trainer = TorchTrainer(
        _train_loop,
        train_loop_config={
            "config": job.config,
            "tracking_uri": job.tracking_uri,
            "run_id": run_id,
            "trial_dir": str(trial_dir),
            "cache_dir": job.cache_dir,
            "home": job.home,
        },
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=job.gpus > 0, resources_per_worker=per_worker),
        run_config=RunConfig(
            name=job.key,
            storage_path=str(trial_dir / "ray-train"),
            failure_config=FailureConfig(max_failures=job.max_retries),
        ),
    )
    result_file = trial_dir / RESULT_FILE
    result_file.unlink(missing_ok=True)
    (trial_dir / OUT_OF_MEMORY_FILE).unlink(missing_ok=True)  # a new submit or resume tries again
    trainer.fit()  # raises when the worker group failed beyond its budget
    return TrialResult.from_json(result_file.read_text())
