"""What every driver of a grid (a fixed list of trials, adaptive seeds, an Optuna search) sends to Ray, built in one
place: Ray started and checked for the grid's GPUs, the task with its resources, each trial's job and tags, the
parent run's tags. A driver only decides which trials run next."""

from __future__ import annotations

from types import MappingProxyType

from gatelab.grid.dispatch.local_ray import init_local_ray
from gatelab.grid.dispatch.worker import TrialJob, run_grid_trial
from gatelab.grid.spec.grid_spec import GridSpec
from gatelab.grid.spec.ladder_spec import rung_of
from gatelab.grid.spec.trial_cost import training_flops
from gatelab.tracking.store import Store
from gatelab.trainer.config.run_tags import GIT_SHA_TAG, GRID_FILE_HASH_TAG, GRID_FILE_TAG, GRID_TAG
from gatelab.trainer.config.trial import TrialConfig
from gatelab.trainer.provenance import git_sha

# Out-of-memory is a deterministic failure (the same trial on the same node runs out again): record it, do not
# retry. A worker that Ray's memory monitor kills is retried on Ray's own budget, apart from the task's
# max_retries, and with Ray 2.60's default that went on indefinitely (6 attempts in 60 s with max_retries=2,
# measured; docs/libraries.md, Ray core). A cluster sets the same with the RAY_task_oom_retries=0 environment
# of every node (ray_cluster.yaml); a joined Ray keeps its own setting.
NO_OOM_RETRIES = MappingProxyType({"task_oom_retries": 0})  # read-only: ray.init adds keys to the dict it gets
RAY_INIT_DEFAULTS = MappingProxyType({"include_dashboard": False, "log_to_driver": True, "configure_logging": False})


def experiment_name(spec: GridSpec) -> str:
    return spec.tracking.experiment or spec.name


def home_database(spec: GridSpec, store: Store) -> str | None:
    """The ledger's database a driver may read directly: the home's, unless the grid logs to its own server."""
    return store.tracking_uri if spec.tracking.uri is None else None


def parent_tags(spec: GridSpec, **extra: str) -> dict[str, str]:
    """Tags of the grid's parent run: its file, the file's hash, the code's git SHA, and the driver's own."""
    return {
        GRID_FILE_TAG: spec.source,
        GRID_FILE_HASH_TAG: spec.file_hash,
        GIT_SHA_TAG: git_sha(),
        **extra,
    }


def trial_tags(spec: GridSpec, overrides: dict, **extra: str) -> dict[str, str]:
    """Tags of a new child run; the worker adds the variant's axes, paper reference, seed and LR."""
    return {GRID_TAG: spec.name, **extra, **{f"override.{k}": str(v) for k, v in overrides.items()}}


def start_ray(spec: GridSpec, address: str | None) -> None:
    """Start a local Ray, or join the one the grid or --address names, and refuse a grid whose trials ask for
    more GPUs than a local Ray has (they would wait forever; a cluster may autoscale GPUs in)."""
    import ray

    joining = address or spec.ray.address
    local = joining in (None, "local")
    if not ray.is_initialized():
        if local:  # on loopback only (grid/dispatch/local_ray.py)
            init_local_ray(**RAY_INIT_DEFAULTS, _system_config=dict(NO_OOM_RETRIES))
        else:  # the grid's ray.address / --address joins a cluster on purpose
            ray.init(address=joining, **RAY_INIT_DEFAULTS)
    gpus = ray.cluster_resources().get("GPU", 0)
    if local and spec.resources.gpus > gpus:
        raise ValueError(
            f"{spec.source}: resources.gpus={spec.resources.gpus:g} per trial, but the local Ray has "
            f"{gpus:g} GPUs; set resources.gpus: 0 to train on CPU, or join a cluster with --address"
        )


def trial_task(spec: GridSpec):
    """The Ray task that runs one trial, with the grid's resources: a plain trial reserves its CPUs and GPUs
    (a fraction of one GPU included); a DDP trial's task only drives Ray Train, whose workers reserve them."""
    import ray

    res = spec.resources
    return ray.remote(run_grid_trial).options(
        num_cpus=0 if res.ddp_workers > 1 else res.cpus,
        num_gpus=0 if res.ddp_workers > 1 else res.gpus,
        max_retries=spec.ray.max_retries,
        retry_exceptions=False,
    )


def job_for(
    spec: GridSpec, store: Store, tracking_uri: str, parent_run_id: str, trial, *, suffix: str = "", runner=None, **tags
):
    """The job of one of the grid's trials (anything with key, config, overrides and label), its run named
    `<label> [<key>]<suffix>` and tagged by trial_tags with the driver's own `tags`; `runner`: TrialJob.runner."""
    return trial_job(
        spec,
        store,
        tracking_uri,
        parent_run_id,
        key=trial.key,
        config=trial.config,
        run_name=f"{trial.label} [{trial.key}]{suffix}",
        tags=trial_tags(spec, trial.overrides, **tags),
        params=ladder_params(spec, trial),
        runner=runner,
    )


def ladder_params(spec: GridSpec, trial) -> dict[str, str]:
    """A ladder trial's rung, parameters and FLOPs as run params, so the MLflow UI can plot loss against size."""
    rung = rung_of(spec.ladder, trial.overrides)
    if rung is None:
        return {}
    return {
        "ladder.rung": str(rung.index),
        "ladder.non_embedding_params": str(rung.non_embedding_params),
        "ladder.train_flops": f"{training_flops(trial):.6g}",
    }


def trial_job(
    spec: GridSpec,
    store: Store,
    tracking_uri: str,
    parent_run_id: str,
    *,
    key: str,
    config: TrialConfig,
    run_name: str,
    tags: dict[str, str],
    params: dict[str, str] | None = None,
    runner=None,
) -> TrialJob:
    """Everything a worker needs for one trial, with the grid's resources and retry budget."""
    res = spec.resources
    return TrialJob(
        key=key,
        config=config,
        run_name=run_name,
        tags=tags,
        tracking_uri=tracking_uri,
        experiment=experiment_name(spec),
        parent_run_id=parent_run_id,
        checkpoint_root=spec.storage.root(store.checkpoints_dir),
        cache_dir=str(store.cache_dir),
        home=str(store.home),
        ddp_workers=res.ddp_workers,
        cpus=res.cpus,
        gpus=res.gpus,
        max_retries=spec.ray.max_retries,
        params=params or {},
        runner=runner,
    )
